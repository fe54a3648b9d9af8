"""The Celery app. ``celery -A lashops worker`` / ``celery -A lashops beat`` start against
``CELERY_BROKER_URL``. Without a broker the platform uses its in-process driver instead
(lashops.core.runner), and this app is only used by the CLI."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lashops.settings")

app = Celery("lashops")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
