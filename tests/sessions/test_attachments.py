"""Attachments: content-addressed blobs that only a holding session can read."""

import hashlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from sessions_app.models import Attachment, SessionAttachment
from sessions_app.services import session_open

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
DIGEST = hashlib.sha256(PNG).hexdigest()


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    return tmp_path


@pytest.fixture
def sessions(workspace):
    for session_id in ("s1", "s2"):
        session_open(workspace=workspace, session_id=session_id)


def _upload(api, session_id="s1", content=PNG, name="chart.png", content_type="image/png"):
    upload = SimpleUploadedFile(name, content, content_type=content_type)
    return api.post(f"/api/sessions/{session_id}/attachments", data={"file": upload})


def _blobs(media) -> list:
    return [p for p in media.rglob("*") if p.is_file()]


def test_upload_stores_the_blob_by_its_sha256(api, sessions, media):
    response = _upload(api)
    assert response.status_code == 201
    assert response.json() == {"sha256": DIGEST, "size": len(PNG), "content_type": "image/png", "filename": "chart.png"}
    [blob] = _blobs(media)
    assert blob.name == DIGEST and blob.read_bytes() == PNG


def test_the_same_bytes_twice_are_one_blob(api, sessions, media):
    first = _upload(api, name="a.png").json()
    again = _upload(api, name="b.png").json()
    other = _upload(api, session_id="s2", name="c.png").json()
    assert first["sha256"] == again["sha256"] == other["sha256"] == DIGEST
    assert Attachment.objects.count() == 1 and len(_blobs(media)) == 1
    assert SessionAttachment.objects.filter(attachment_id=DIGEST).count() == 2
    assert again["filename"] == "a.png"  # one hold per session; the first name stays


def test_the_holder_reads_the_bytes_back(api, sessions):
    _upload(api)
    response = api.get(f"/api/sessions/s1/attachments/{DIGEST}")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content) == PNG


def test_another_session_in_the_same_workspace_gets_404(api, sessions):
    _upload(api, session_id="s1")
    response = api.get(f"/api/sessions/s2/attachments/{DIGEST}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_another_workspace_gets_404_even_for_a_session_holding_the_blob(api, sessions, other_workspace, client):
    from lashops.core.services import api_key_create

    _upload(api)
    theirs = api_key_create(workspace=other_workspace, name="theirs").plaintext
    response = client.get(f"/api/sessions/s1/attachments/{DIGEST}", HTTP_AUTHORIZATION=f"Bearer {theirs}")
    assert response.status_code == 404


def test_an_unknown_digest_is_404(api, sessions):
    assert api.get(f"/api/sessions/s1/attachments/{'0' * 64}").status_code == 404


def test_delete_is_idempotent_and_the_blob_goes_with_its_last_holder(
    api, sessions, media, django_capture_on_commit_callbacks
):
    _upload(api, session_id="s1")
    _upload(api, session_id="s2")

    with django_capture_on_commit_callbacks(execute=True):
        first = api.delete(f"/api/sessions/s1/attachments/{DIGEST}").json()
    again = api.delete(f"/api/sessions/s1/attachments/{DIGEST}").json()
    assert (first, again) == ({"removed": True}, {"removed": False})
    assert api.get(f"/api/sessions/s1/attachments/{DIGEST}").status_code == 404
    assert api.get(f"/api/sessions/s2/attachments/{DIGEST}").status_code == 200  # still held by s2
    assert len(_blobs(media)) == 1

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert api.delete(f"/api/sessions/s2/attachments/{DIGEST}").json() == {"removed": True}
    assert len(callbacks) >= 1  # the file is removed only once the row's deletion committed
    assert not Attachment.objects.exists() and _blobs(media) == []


def test_deleting_the_last_holding_session_removes_the_blob(api, sessions, media, django_capture_on_commit_callbacks):
    _upload(api, session_id="s1")
    _upload(api, session_id="s2")
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete("/api/sessions/s1").json()["attachments"] == 1
    assert Attachment.objects.exists() and len(_blobs(media)) == 1  # s2 still holds it

    with django_capture_on_commit_callbacks(execute=True):
        api.delete("/api/sessions/s2")
    assert not SessionAttachment.objects.exists()
    assert not Attachment.objects.exists() and _blobs(media) == []


def test_an_upload_without_a_file_is_422(api, sessions):
    response = api.post("/api/sessions/s1/attachments", data={"filename": "x"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "validation_error"
