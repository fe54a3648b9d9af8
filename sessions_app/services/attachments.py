"""Attachments: blobs stored once by content hash, held by sessions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from lashops.core import event_types
from lashops.core.events import publish
from sessions_app.models import (
    Attachment,
    Session,
    SessionAttachment,
)
from sessions_app.services.common import _subject

# --- attachments -------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredAttachment:
    attachment: Attachment
    link: SessionAttachment


def attachment_put(*, session: Session, content: bytes, content_type: str, filename: str = "") -> StoredAttachment:
    """Store a blob by content hash (once, however many sessions hold it) and let ``session`` hold it."""
    digest = hashlib.sha256(content).hexdigest()
    with transaction.atomic():
        attachment = Attachment.objects.filter(pk=digest).first()
        if attachment is None:
            name = default_storage.save(f"attachments/{digest[:2]}/{digest}", ContentFile(content))
            attachment = Attachment.objects.create(
                sha256=digest,
                size=len(content),
                content_type=content_type or "application/octet-stream",
                storage_name=name,
            )
        link, _ = SessionAttachment.objects.get_or_create(
            session=session, attachment=attachment, defaults={"filename": filename}
        )
        publish(
            workspace=session.workspace,
            type=event_types.ATTACHMENT_ADDED,
            subject=_subject(session.pk),
            data={"sha256": digest, "size": attachment.size, "filename": filename},
        )
    return StoredAttachment(attachment=attachment, link=link)


def attachment_delete(*, session: Session, sha256: str) -> bool:
    """Drop the session's hold (idempotent); the blob goes when nobody holds it."""
    with transaction.atomic():
        deleted = SessionAttachment.objects.filter(session=session, attachment_id=sha256).delete()[0]
        _release_unheld([sha256])
    return bool(deleted)


def _release_unheld(digests: list[str]) -> None:
    """Drop the blobs among ``digests`` that nobody holds (rows now, files after commit)."""
    for attachment in Attachment.objects.filter(pk__in=digests, holders__isnull=True):
        name = attachment.storage_name
        attachment.delete()
        transaction.on_commit(lambda name=name: default_storage.delete(name))  # type: ignore[misc]  # default binds the loop value
