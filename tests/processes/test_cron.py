from datetime import UTC, datetime

import pytest

from lashops.core.errors import InvalidInput
from processes_app.triggers import cron_next, render_template


def test_cron_next_handles_steps_ranges_and_weekdays():
    base = datetime(2025, 1, 1, 10, 7, 30, tzinfo=UTC)  # a Wednesday
    assert cron_next("*/5 * * * *", base) == datetime(2025, 1, 1, 10, 10, tzinfo=UTC)
    assert cron_next("0 9 * * *", base) == datetime(2025, 1, 2, 9, 0, tzinfo=UTC)
    assert cron_next("30 8 * * 1-5", datetime(2025, 1, 3, 9, 0, tzinfo=UTC)) == datetime(2025, 1, 6, 8, 30, tzinfo=UTC)
    assert cron_next("0 0 1 3 *", base) == datetime(2025, 3, 1, 0, 0, tzinfo=UTC)
    assert cron_next("0 0 * * 7", base) == datetime(2025, 1, 5, 0, 0, tzinfo=UTC)  # 7 is Sunday


@pytest.mark.parametrize("expr", ["* * * *", "60 * * * *", "a * * * *", "*/0 * * * *"])
def test_bad_cron_expressions_are_rejected(expr):
    with pytest.raises(InvalidInput):
        cron_next(expr, datetime(2025, 1, 1, tzinfo=UTC))


def test_input_templates_substitute_payload_paths():
    template = {"order": "$payload.order.id", "all": "$payload", "occ": "$occurrence_id", "x": ["$payload.n", 1]}
    payload = {"order": {"id": 7}, "n": 2}
    assert render_template(template, payload=payload, occurrence_id="o1") == {
        "order": 7,
        "all": payload,
        "occ": "o1",
        "x": [2, 1],
    }
