"""Session lifecycle events: one vocabulary (lashops.core.event_types), one name per meaning."""

import pytest

from lashops.core import event_types
from lashops.core.models import Event
from sessions_app.services import session_open, session_set_status

pytestmark = pytest.mark.django_db


def _types(session_id: str) -> list[str]:
    return list(Event.objects.filter(session_id=session_id).order_by("cursor").values_list("type", flat=True))


def test_a_session_is_opened_once_then_parked_resumed_and_closed(workspace):
    session, created = session_open(workspace=workspace, session_id="life")
    assert created
    session_set_status(session=session, status="parked")
    session, created = session_open(workspace=workspace, session_id="life")  # opening a parked session resumes it
    assert not created
    session_set_status(session=session, status="parked")
    session_set_status(session=session, status="open")
    session_set_status(session=session, status="closed")
    assert _types("life") == [
        "session.opened",
        "session.parked",
        "session.resumed",
        "session.parked",
        "session.resumed",
        "session.closed",
    ]


def test_every_event_type_is_named_once():
    names = {name: value for name, value in vars(event_types).items() if name.isupper() and isinstance(value, str)}
    values = [value for name, value in names.items() if not name.endswith("_PREFIX")]
    assert len(values) == len(set(values))
    assert "session.open" not in values
