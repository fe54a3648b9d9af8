"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lashops.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from lashops.core import access_log  # noqa: E402
from lashops.core.consumers import LoopBindingMiddleware, WorkspaceAuthMiddleware  # noqa: E402
from lashops.core.lifespan import lifespan_app  # noqa: E402
from lashops.core.middleware import WebSocketDatabaseGuard  # noqa: E402
from lashops.routing import websocket_urlpatterns  # noqa: E402

# uvicorn writes request lines (query strings included) to its logs: no ?token=/?ticket= value.
access_log.install()

application = LoopBindingMiddleware(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": WebSocketDatabaseGuard(
                AuthMiddlewareStack(WorkspaceAuthMiddleware(URLRouter(websocket_urlpatterns)))
            ),
            "lifespan": lifespan_app,  # shutdown marks this process's worker row stopped
        }
    )
)

# What is alive now (Django, the apps, URL and template machinery) lives as long as the server.
# Freezing it keeps full collections from walking it: one took ~74 ms here, a stall for every
# socket on the server mid fan-out; after the freeze it walks only what serving allocates.
gc.freeze()
