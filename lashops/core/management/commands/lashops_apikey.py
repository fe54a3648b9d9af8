from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from lashops.core import services
from lashops.core.models import ApiKey, Workspace


class Command(BaseCommand):
    help = "Create, list or revoke workspace API keys."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="issue a key (printed once)")
        create.add_argument("--workspace", required=True, help="workspace slug (created if missing)")
        create.add_argument("--name", required=True)
        listing = sub.add_parser("list", help="list keys")
        listing.add_argument("--workspace", help="only this workspace")
        revoke = sub.add_parser("revoke", help="revoke a key by prefix or id")
        revoke.add_argument("key", help="key prefix (the part after lsk_) or numeric id")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "create":
            workspace = services.workspace_get_or_create(slug=options["workspace"])
            issued = services.api_key_create(workspace=workspace, name=options["name"])
            self.stdout.write(issued.plaintext)
            self.stderr.write(f"Created key {issued.api_key.prefix} for workspace {workspace.slug}; shown once.")
        elif action == "list":
            keys = ApiKey.objects.select_related("workspace").order_by("workspace__slug", "-created_at")
            if options.get("workspace"):
                if not Workspace.objects.filter(slug=options["workspace"]).exists():
                    raise CommandError(f"no workspace {options['workspace']!r}")
                keys = keys.filter(workspace__slug=options["workspace"])
            for k in keys:
                state = "revoked" if k.revoked_at else "active"
                used = k.last_used_at.isoformat() if k.last_used_at else "never"
                self.stdout.write(f"{k.pk}\t{k.workspace.slug}\t{k.prefix}\t{k.name}\t{state}\tlast used {used}")
        elif action == "revoke":
            ref = options["key"]
            query = ApiKey.objects.filter(pk=int(ref)) if ref.isdigit() else ApiKey.objects.filter(prefix=ref)
            api_key = query.first()
            if api_key is None:
                raise CommandError(f"no API key {ref!r}")
            services.api_key_revoke(api_key=api_key)
            self.stdout.write(f"revoked {api_key.prefix} ({api_key.name})")
