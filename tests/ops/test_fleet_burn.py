"""The fleet page's token and cost burn over a chosen range: /ops/fleet.json?range=1h|24h|7d,
bucketed by the minute, 15 minutes and the hour; anything else is a 422 that says what is allowed."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from sessions_app.models import Turn, UsageRecord
from sessions_app.services import session_open

HOUR = timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
NOW = HOUR + timedelta(minutes=37, seconds=30)


@pytest.fixture
def staff(client, django_user_model, workspace):
    client.force_login(django_user_model.objects.create_superuser("ops", "ops@example.com", "pw-123456"))
    return client


@pytest.fixture
def usage(workspace):
    """``usage(at, tokens)`` records one model call's usage at ``at`` (input + output = tokens)."""
    session, _ = session_open(workspace=workspace, session_id="s1", model={"provider": "scripted", "model": "m1"})
    turn = Turn.objects.create(id="t1", session=session, index=1, input_text="hi")

    def record(at: datetime, tokens: int, cost: str = "0.001") -> None:
        row = UsageRecord.objects.create(
            session=session,
            turn=turn,
            provider="scripted",
            model="m1",
            input_tokens=tokens - 1,
            output_tokens=1,
            cost_usd=Decimal(cost),
        )
        UsageRecord.objects.filter(pk=row.pk).update(created_at=at)

    return record


@pytest.fixture
def at_now(monkeypatch):
    """Read the snapshot at ``NOW`` (mid-bucket) so the bucket boundaries are fixed."""
    monkeypatch.setattr(timezone, "now", lambda: NOW)


def _burn(staff, range_: str | None) -> dict:
    url = "/ops/fleet.json" + (f"?range={range_}" if range_ is not None else "")
    response = staff.get(url)
    assert response.status_code == 200, response.content
    return response.json()


def _points(body: dict) -> dict[str, int]:
    return {p["t"]: p["tokens"] for p in body["burn"]["model"].get("scripted:m1", [])}


def test_one_hour_is_by_the_minute_from_the_first_whole_minute(staff, usage, at_now):
    first = HOUR + timedelta(minutes=37) - timedelta(minutes=59)
    usage(first - timedelta(seconds=1), 1000)  # just before the window
    usage(first, 5)
    usage(HOUR + timedelta(minutes=10), 7)
    usage(HOUR + timedelta(minutes=10, seconds=59), 3)  # same minute
    usage(HOUR + timedelta(minutes=37, seconds=29), 11)  # the current, partial minute
    body = _burn(staff, None)  # the default
    assert body["burn_range"] == {
        "range": "1h",
        "bucket_seconds": 60,
        "since": first.isoformat(),
        "until": NOW.isoformat(),
        "choices": ["1h", "24h", "7d"],
    }
    assert _points(body) == {
        first.isoformat(): 5,
        (HOUR + timedelta(minutes=10)).isoformat(): 10,
        (HOUR + timedelta(minutes=37)).isoformat(): 11,
    }
    assert _points(_burn(staff, "1h")) == _points(body)


def test_twenty_four_hours_is_by_the_quarter_hour(staff, usage, at_now):
    first = HOUR + timedelta(minutes=30) - timedelta(hours=23, minutes=45)
    usage(first - timedelta(seconds=1), 1000)
    usage(first, 2)
    usage(HOUR + timedelta(minutes=14, seconds=59), 3)  # last second of the :00 quarter
    usage(HOUR + timedelta(minutes=15), 5)  # first second of the :15 quarter
    usage(HOUR + timedelta(minutes=29, seconds=59), 7)
    usage(HOUR + timedelta(minutes=37), 11)
    body = _burn(staff, "24h")
    assert (body["burn_range"]["bucket_seconds"], body["burn_range"]["since"]) == (900, first.isoformat())
    assert _points(body) == {
        first.isoformat(): 2,
        HOUR.isoformat(): 3,
        (HOUR + timedelta(minutes=15)).isoformat(): 12,
        (HOUR + timedelta(minutes=30)).isoformat(): 11,
    }
    cost = {p["t"]: p["cost"] for p in body["burn"]["model"]["scripted:m1"]}
    assert cost[(HOUR + timedelta(minutes=15)).isoformat()] == pytest.approx(0.002)
    assert list(body["burn"]["mob"]) == ["(no mob)"] and list(body["burn"]["profile"]) == ["(no profile)"]


def test_seven_days_is_by_the_hour(staff, usage, at_now):
    first = HOUR - timedelta(hours=167)
    usage(first - timedelta(seconds=1), 1000)
    usage(first + timedelta(minutes=59, seconds=59), 4)
    usage(HOUR - timedelta(days=3, minutes=1), 6)
    usage(HOUR + timedelta(minutes=37), 9)
    body = _burn(staff, "7d")
    assert (body["burn_range"]["bucket_seconds"], body["burn_range"]["since"]) == (3600, first.isoformat())
    assert _points(body) == {
        first.isoformat(): 4,
        (HOUR - timedelta(days=3, hours=1)).isoformat(): 6,
        HOUR.isoformat(): 9,
    }


@pytest.mark.parametrize("bad", ["2d", "1H", "7d ", "x" * 500, "0"])
def test_an_unknown_range_is_a_422_that_names_the_allowed_ones(staff, workspace, bad):
    response = staff.get("/ops/fleet.json", {"range": bad})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_range"
    assert "range must be one of 1h, 24h, 7d" in error["message"]
    assert error["details"][0]["path"] == "range"


def test_the_fleet_page_renders_the_range_it_was_asked_for(staff, workspace):
    page = staff.get("/ops/?range=24h")
    assert page.status_code == 200 and b'"range": "24h"' in page.content
    assert b'id="burn-range"' in page.content
    assert staff.get("/ops/?range=1y").status_code == 422
