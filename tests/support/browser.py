"""Headless Chromium helpers of the browser tests (the fixtures are in tests/browser/conftest.py)."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts"


def watch_js_errors(pg) -> list[str]:
    """Collect the page's JavaScript errors: uncaught exceptions and console.error messages."""
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(f"pageerror on {pg.url}: {exc}"))
    pg.on(
        "console",
        lambda msg: errors.append(f"console.{msg.type} on {pg.url}: {msg.text}") if msg.type == "error" else None,
    )
    return errors


def shot(page, name: str) -> None:
    """Save a full-page screenshot to test-artifacts/<name>.png (gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
