"""The Celery app. Workers: `celery -A broker worker -B` (production).
In the embedded default tasks run in-process (CELERY_TASK_ALWAYS_EAGER) and
`manage.py runbroker` runs CELERY_BEAT_SCHEDULE itself."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "broker.settings")

app = Celery("broker")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["broker", "sessions"])
