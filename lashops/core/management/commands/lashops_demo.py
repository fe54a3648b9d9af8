"""Prepare the embedded demo: a workspace, an admin login and an API key.

Credentials are kept in ``$LASHOPS_VAR_DIR/demo-credentials.json`` (git-ignored) so a second
run prints the same login and key instead of issuing new ones."""

from __future__ import annotations

import json
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from lashops.core import services
from lashops.core.models import ApiKey


class Command(BaseCommand):
    help = "Create (or reuse) the demo workspace, admin user and API key, and print them."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--workspace", default="demo")
        parser.add_argument("--username", default="admin")

    def handle(self, *args: Any, **options: Any) -> None:
        path = settings.VAR_DIR / "demo-credentials.json"
        saved: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        workspace = services.workspace_get_or_create(slug=options["workspace"], name="Demo workspace")

        User = get_user_model()
        username = options["username"]
        user = User.objects.filter(username=username).first()
        password = saved.get("password")
        if user is None or not password or not user.check_password(password):
            password = secrets.token_urlsafe(12)
            if user is None:
                user = User.objects.create_superuser(username=username, email="", password=password)
            else:
                user.set_password(password)
                user.is_staff = user.is_superuser = True
                user.save()
        workspace.members.add(user)

        key = saved.get("api_key")
        if not key or services.api_key_authenticate(plaintext=key) is None:
            key = services.api_key_create(workspace=workspace, name="demo").plaintext
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"username": username, "password": password, "api_key": key}))
        path.chmod(0o600)

        from lashops.core.demo import seed_demo_content

        seed_demo_content(workspace=workspace)
        from lashops.core.runner import drain

        drain()  # let the demo's background turns and deliveries finish before this command exits

        active = ApiKey.objects.filter(workspace=workspace, revoked_at__isnull=True).count()
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "  LashOps demo is ready",
                    "  ---------------------",
                    f"  Admin:      http://127.0.0.1:8000/admin/   login {username} / {password}",
                    "  API docs:   http://127.0.0.1:8000/api/docs",
                    "  Health:     http://127.0.0.1:8000/api/health",
                    f"  API key:    {key}   (workspace {workspace.slug}, {active} active key(s))",
                    "  Try:        curl -H 'Authorization: Bearer <key>' http://127.0.0.1:8000/api/workspace",
                    "  Live:       ws://127.0.0.1:8000/ws/fleet/?after=0  (Authorization: Bearer <key>)",
                    "",
                ]
            )
        )
