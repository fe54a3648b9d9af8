"""Delete terminal processes older than the retention window (with their logs), in batches."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from processes_app.services import processes_prune


class Command(BaseCommand):
    help = "Prune terminal processes older than LASHOPS_PROCESS_RETENTION_DAYS (running ones are never touched)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--older-than-days", type=float, default=None)
        parser.add_argument("--batch-size", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        deleted = processes_prune(older_than_days=options["older_than_days"], batch_size=options["batch_size"])
        self.stdout.write(f"pruned {deleted} process(es)")
