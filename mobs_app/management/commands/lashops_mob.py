"""``manage.py lashops_mob load FILE`` (and ``bootstrap``, ``drain``, ``project``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from lashops.core.errors import LashOpsError
from lashops.core.services import workspace_get_or_create


class Command(BaseCommand):
    help = "Mobs: load a TOML definition, bootstrap, drain, or run a ledger projector."

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        load = sub.add_parser("load", help="Validate and load a TOML definition (a new revision when it changed).")
        load.add_argument("file")
        boot = sub.add_parser("bootstrap", help="Apply a bootstrap mode to a mob.")
        boot.add_argument("mob_id")
        boot.add_argument("--mode", default="lazy", choices=["eager", "lazy", "lazy_background_warm"])
        boot.add_argument("--concurrency", type=int)
        drain = sub.add_parser("drain", help="Refuse new sends and dispatches (--resume to undo).")
        drain.add_argument("mob_id")
        drain.add_argument("--resume", action="store_true")
        project = sub.add_parser("project", help="Run a ledger projector from its stored cursor.")
        project.add_argument("mob_id")
        project.add_argument("--name", default="default")
        project.add_argument("--output", help="Append each projected seq to this file (fsynced).")
        project.add_argument("--sleep", type=float, default=0.0, help="Seconds per event (for demos and tests).")
        for p in (load, boot, drain, project):
            p.add_argument("--workspace", default="demo")

    def handle(self, *args: Any, **options: Any) -> None:
        from mobs_app import journal, services

        workspace = workspace_get_or_create(slug=options["workspace"])
        try:
            if options["action"] == "load":
                result = services.mob_load(workspace=workspace, source=Path(options["file"]).read_text())
                verb = "loaded revision" if result.created else "unchanged at revision"
                self.stdout.write(f"mob {result.mob.mob_id}: {verb} {result.definition.revision}")
                for action, keys in result.reconcile.items():
                    if keys:
                        self.stdout.write(f"  {action}: {', '.join(keys)}")
                return
            mob = services.mob_get(workspace=workspace, mob_id=options["mob_id"])
            if options["action"] == "bootstrap":
                status = services.mob_bootstrap(mob=mob, mode=options["mode"], concurrency=options["concurrency"])
                self.stdout.write(f"{status}")
                if options["mode"] == "lazy_background_warm":
                    self._follow_warming(mob)
            elif options["action"] == "drain":
                services.mob_drain(mob=mob, shutting_down=not options["resume"])
                self.stdout.write("resumed" if options["resume"] else "draining: new dispatches are refused")
            else:
                out = open(options["output"], "a") if options["output"] else None  # noqa: SIM115

                def handle(event: Any) -> None:
                    if out is not None:
                        out.write(f"{event.seq}\n")
                        out.flush()
                        os.fsync(out.fileno())
                    if options["sleep"]:
                        time.sleep(options["sleep"])

                count = journal.projector_run(mob=mob, name=options["name"], handler=handle)
                self.stdout.write(f"projected {count} event(s)")
        except LashOpsError as exc:
            details = exc.details if isinstance(exc.details, list) else []
            lines = [f"{exc.code}: {exc.message}"]
            lines += [f"  line {d.get('line') or '?'}: {d.get('path')}: {d.get('message')}" for d in details]
            raise CommandError("\n".join(lines)) from None

    def _follow_warming(self, mob: Any) -> None:
        """The warm is recorded, so it is never lost; with the in-process runner it also runs here,
        so wait for it (with progress) instead of leaving it to the warming sweep of a server."""
        from lashops.core import runner
        from mobs_app import services

        if runner.runner_mode() != "in_process":
            self.stdout.write("warming on the Celery workers; follow it with GET /api/mobs/{id}/bootstrap")
            return
        from lashops.core import heartbeat

        last, idle_checks = None, 0
        while True:
            status = services.bootstrap_status(mob=mob)
            counts = status["counts"]
            line = ", ".join(f"{n} {state}" for state, n in counts.items())
            if line != last:
                self.stdout.write(f"warming {mob.mob_id}: {line}")
                self.stdout.flush()
                last = line
            pending = type(mob).objects.filter(pk=mob.pk, warm_requested_at__isnull=False).exists()
            if not pending and not counts["warming"]:
                break
            idle_checks = idle_checks + 1 if not heartbeat.snapshot()[0] else 0
            if idle_checks >= 4:  # nothing runs here any more, yet the warm is not finished
                self.stdout.write("the rest of the warm is recorded: the warming sweep of a running server finishes it")
                break
            time.sleep(0.5)
        runner.drain()
        self.stdout.write(f"warmed {mob.mob_id}: {services.bootstrap_status(mob=mob)}")
