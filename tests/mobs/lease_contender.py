"""Run in a separate OS process: contend for one identity lease at a given instant."""

import json
import os
import sys
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lashops.settings")
django.setup()

from mobs_app.leases import Acquired, DatabaseIdentityLeases  # noqa: E402

key, holder, start_at, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
while time.time() < start_at:
    time.sleep(0.001)
result = DatabaseIdentityLeases().acquire([key], holder=holder, ttl=ttl)[0]
print(
    json.dumps(
        {"acquired": isinstance(result, Acquired), "holder": result.holder, "token": getattr(result, "token", 0)}
    )
)
