"""Kept for callers in this app: the scheduler is one piece for every app (lashops.core.scheduler)."""

from lashops.core.scheduler import enabled, ensure_started

__all__ = ["enabled", "ensure_started"]
