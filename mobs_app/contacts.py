"""Cross-mob addresses ``member::mob`` and the contact directory's transports."""

from __future__ import annotations

from mobs_app.errors import InvalidInput


def parse_transport(value: str) -> tuple[str, str]:
    """``inproc``, ``tcp://host:port`` or ``uds:///path``; anything else is an invalid transport."""
    if value == "inproc":
        return "inproc", ""
    if value.startswith("tcp://"):
        host, sep, port = value[6:].rpartition(":")
        if host and sep and port.isdigit() and 0 < int(port) < 65536:
            return "tcp", value[6:]
    elif value.startswith("uds://") and value[6:].startswith("/") and len(value) > 7:
        return "uds", value[6:]
    raise InvalidInput(
        f"invalid transport {value!r}: use inproc, tcp://host:port or uds:///path", code="invalid_transport"
    )


def parse_address(address: str) -> tuple[str, str | None]:
    """``member`` or ``member::mob`` -> (member, mob or None). A single ':' is part of the member key."""
    member, sep, mob = address.rpartition("::")
    if not sep:
        return address, None
    if not member or not mob:
        raise InvalidInput(f"invalid peer address {address!r}: use member or member::mob", code="invalid_address")
    return member, mob
