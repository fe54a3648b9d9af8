from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from lashops.core.errors import LashOpsError
from sessions_app import services
from sessions_app.models import Turn


class Command(BaseCommand):
    help = "Drive (or re-drive) a turn to its commit, or sweep stranded turns."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        drive = sub.add_parser("drive", help="drive one turn in this process")
        drive.add_argument("turn_id")
        sub.add_parser("sweep", help="re-dispatch turns whose driver is gone")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "sweep":
            self.stdout.write(f"dispatched {services.turns_sweep()}")
            return
        if not Turn.objects.filter(pk=options["turn_id"]).exists():
            raise CommandError(f"no turn {options['turn_id']!r}")
        try:
            turn = services.turn_drive(turn_id=options["turn_id"])
        except LashOpsError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(f"{turn.pk} {turn.status} {turn.outcome} {turn.stop_reason}".strip())
