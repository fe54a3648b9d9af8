"""Who is calling, and for which workspace.

Every API request and WebSocket resolves to exactly one workspace: an API key carries
its own; a logged-in user picks one of theirs with the ``X-LashOps-Workspace`` header
(or ``?workspace=`` on sockets), or gets their only one. Superusers may pick any.
"""

from __future__ import annotations

from typing import Any, cast

from django.http import HttpRequest
from ninja.security import APIKeyHeader, SessionAuth

from lashops.core.models import ApiKey, Workspace
from lashops.core.services import api_key_authenticate
from lashops.core.validation import text_problem

WORKSPACE_HEADER = "X-LashOps-Workspace"


class WorkspaceRequest(HttpRequest):
    """The request an authenticated API view receives (for type annotations; never built):
    ``ApiKeyAuth`` or ``WorkspaceSessionAuth`` has set the workspace it acts in, and the API key
    when one authenticated it (a logged-in session sets no ``api_key``)."""

    workspace: Workspace
    api_key: ApiKey | None


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or text_problem(token):
        return None
    return token.strip()


def workspace_for_user(user: Any, requested: str | None) -> Workspace | None:
    """The workspace a logged-in user acts in, or None when it is ambiguous or not theirs."""
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    candidates = Workspace.objects.all() if user.is_superuser else user.lashops_workspaces.all()
    if requested and text_problem(requested):
        return None
    if requested:
        return candidates.filter(slug=requested).first()
    first_two = list(candidates[:2])
    return first_two[0] if len(first_two) == 1 else None


class ApiKeyAuth(APIKeyHeader):
    """``Authorization: Bearer lsk_...``"""

    param_name = "Authorization"
    openapi_scheme = "bearer"

    def authenticate(self, request: HttpRequest, key: str | None) -> ApiKey | None:
        token = bearer_token(key)
        if token is None:
            return None
        api_key = api_key_authenticate(plaintext=token)
        if api_key is None:
            return None
        typed = cast(WorkspaceRequest, request)
        typed.workspace = api_key.workspace
        typed.api_key = api_key
        return api_key


class WorkspaceSessionAuth(SessionAuth):
    """A logged-in Django session (with CSRF on unsafe methods), acting in one workspace.

    CSRF is checked only for a request that carries a logged-in session: a request without any
    credentials is answered 401 ``unauthorized`` on every method (ninja would check CSRF first and
    answer an anonymous POST 403 ``csrf_failed``), while a logged-in browser that forgot its CSRF
    token still gets 403 ``csrf_failed``."""

    def _get_key(self, request: HttpRequest) -> str | None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        return super()._get_key(request)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = super().authenticate(request, key)
        if not user:
            return None
        workspace = workspace_for_user(user, request.headers.get(WORKSPACE_HEADER))
        if workspace is None:
            return None
        cast(WorkspaceRequest, request).workspace = workspace
        return user


api_key_auth = ApiKeyAuth()
session_auth = WorkspaceSessionAuth()
