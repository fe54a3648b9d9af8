"""Tell a consumer when its socket cannot take more: a bridge from Twisted's producer/consumer
flow control to an awaitable gate.

Why this exists: under daphne, ``await consumer.send(...)`` never blocks. daphne hands each frame
to autobahn, which writes it to the Twisted transport, which buffers it in user space without
limit. A client that stops reading therefore grows the server's memory by every frame sent to it,
and ``ReplayingConsumer``'s bounded send queue never fills, so the client is never told it has a
gap. Twisted does know when a socket is backed up: a transport calls ``pauseProducing()`` on its
registered streaming producer when its write buffer passes ``bufferSize`` (64 KiB) and
``resumeProducing()`` once that buffer has drained to the kernel. ``write_gate`` registers such a
producer for the consumer's connection; the consumer's writer awaits ``gate.wait()`` before each
frame, so a stalled socket stalls only its writer, the send queue fills, and the existing
slow-consumer path drops events and sends ``stream.gap``.

daphne internals this leans on (checked against daphne 4.2.3, autobahn 26.10.2, Twisted 26.10.0,
channels 4.3.2):
* daphne's ``Server.create_application`` passes the app ``send=functools.partial(
  server.handle_reply, protocol)``, where ``protocol`` is the connection's
  ``daphne.ws_protocol.WebSocketProtocol`` (an autobahn protocol) and ``protocol.transport`` is the
  Twisted TCP transport (``twisted.internet.abstract.FileDescriptor``);
* channels' ``SessionMiddleware`` (in ``AuthMiddlewareStack``) wraps that send in
  ``InstanceSessionWrapper.send``, which keeps the original as ``real_send``; a consumer keeps what
  it was given as ``self.base_send``; a send wrapper of ours must set ``__wrapped__`` to the send
  it wraps (``wrap_send``), or the gate cannot see through it;
* the transport already has a producer: twisted.web's ``HTTPChannel`` registers itself in
  ``connectionMade`` and daphne's WebSocket upgrade never unregisters it (autobahn registers
  none). ``registerProducer`` refuses a second one, so the gate takes that producer's place and
  forwards every call to it, which keeps the HTTPChannel's behaviour exactly as before;
* the transport calls ``stopProducing()`` when the connection is lost, which opens the gate for
  good; autobahn's ``dropConnection`` unregisters the producer first, so ``wait()`` also checks
  the transport's ``disconnecting``/``disconnected`` flags while it waits.
Twisted runs on daphne's asyncio loop (``asyncioreactor``), so these callbacks and the consumer
share one thread and the gate can be a plain ``asyncio.Event``.

Anything else (channels' ``WebsocketCommunicator``, uvicorn, TLS terminated by daphne itself,
HTTP/2) gets ``OPEN``, which never waits; under a running Twisted reactor whose internals do not
look as above, that is logged once as a warning.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from typing import Any, Protocol

log = logging.getLogger(__name__)

DROP_CHECK_SECONDS = 1.0  # how often a paused gate looks whether its connection was dropped
_SEND_WRAPPERS = 8  # how many send wrappers (middleware) to look through before giving up
_warned = False


class Gate(Protocol):
    async def wait(self) -> None:
        """Return once the socket can take another frame (at once when it can)."""


class _OpenGate:
    async def wait(self) -> None:
        return None


OPEN: Gate = _OpenGate()


class TransportGate:
    """A Twisted streaming producer (``IPushProducer``) that the transport pauses and resumes;
    ``wait()`` blocks while it is paused. Calls are passed on to the producer it replaced."""

    def __init__(self, transport: Any, previous: Any) -> None:
        self._transport = transport
        self._previous = previous
        self._writable = asyncio.Event()
        if not transport.producerPaused:
            self._writable.set()

    async def wait(self) -> None:
        while not self._writable.is_set():
            # autobahn's dropConnection unregisters the producer before the transport closes, so a
            # gate paused then never hears stopProducing: look at the transport now and then.
            if self._transport.disconnecting or self._transport.disconnected:
                return
            try:
                await asyncio.wait_for(self._writable.wait(), DROP_CHECK_SECONDS)
            except TimeoutError:
                pass

    # IPushProducer, called by the transport. pauseProducing comes on every write made while the
    # buffer is over its mark, resumeProducing once it has drained to the kernel.

    def pauseProducing(self) -> None:
        self._writable.clear()
        if self._previous is not None:
            self._previous.pauseProducing()

    def resumeProducing(self) -> None:
        self._writable.set()
        if self._previous is not None:
            self._previous.resumeProducing()

    def stopProducing(self) -> None:
        self._writable.set()  # the connection is gone: let the writer run into daphne's no-op send
        if self._previous is not None:
            self._previous.stopProducing()


def _daphne_protocol(send: Any) -> Any | None:
    """The daphne protocol object behind a consumer's ``base_send``, or None."""
    for _ in range(_SEND_WRAPPERS):
        if isinstance(send, functools.partial):
            server = getattr(send.func, "__self__", None)
            if type(server).__module__ == "daphne.server" and send.func.__name__ == "handle_reply" and send.args:
                return send.args[0]
            return None
        # Our own wrappers name what they wrap in ``__wrapped__`` (lashops.core.middleware,
        # lashops.core.consumers); channels' InstanceSessionWrapper keeps it as ``real_send``.
        inner = getattr(send, "__wrapped__", None) or getattr(getattr(send, "__self__", None), "real_send", None)
        if inner is None:
            return None
        send = inner
    return None


def wrap_send(wrapper: Any, send: Any) -> Any:
    """Mark ``wrapper`` as wrapping ``send`` so ``write_gate`` can find daphne behind it; every
    ASGI middleware of ours that replaces ``send`` returns its wrapper through this."""
    wrapper.__wrapped__ = send
    return wrapper


def _under_twisted() -> bool:
    reactor = sys.modules.get("twisted.internet.reactor")  # never import it: that installs a reactor
    return bool(getattr(reactor, "running", False))


def _warn_once(reason: str) -> None:
    global _warned
    if _warned or not _under_twisted():
        return
    _warned = True
    log.warning(
        "WebSocket backpressure is off: %s; a client that stops reading will grow this process's memory "
        "and will not be sent stream.gap (lashops/core/backpressure.py expects daphne 4.2's internals)",
        reason,
    )


def write_gate(consumer: Any) -> Gate:
    """A gate for ``consumer``'s socket: a ``TransportGate`` on daphne's TCP transport, else ``OPEN``.
    Call it once per connection (from ``connect``); a second call returns the same gate."""
    protocol = _daphne_protocol(getattr(consumer, "base_send", None))
    if protocol is None:
        _warn_once("could not find daphne's protocol behind consumer.base_send")
        return OPEN
    transport = getattr(protocol, "transport", None)
    api = ("producer", "producerPaused", "registerProducer", "unregisterProducer", "disconnecting", "disconnected")
    if transport is None or not all(hasattr(transport, name) for name in api):
        _warn_once(f"the transport {type(transport).__name__} has no FileDescriptor producer API")
        return OPEN
    if isinstance(transport.producer, TransportGate):
        return transport.producer
    _declare_push_producer()
    gate = TransportGate(transport, transport.producer)
    transport.unregisterProducer()
    transport.registerProducer(gate, True)
    return gate


@functools.cache
def _declare_push_producer() -> None:
    # Declared here, not at import, so processes that never serve sockets do not import Twisted.
    from twisted.internet.interfaces import IPushProducer
    from zope.interface import classImplements

    classImplements(TransportGate, IPushProducer)
