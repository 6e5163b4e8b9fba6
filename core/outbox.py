"""The webhook outbox: whoever sees a job's event appends one small record to a Redis list (one LPUSH), and the API
processes' deliverers make the POSTs (service/webhooks.py, service/webhook_delivery.py).

A record is `{"id": delivery id, "job": job id, "event": ..., "tries": n, "waits": n}`, and "trace", the job's trace
carrier, where it has one; its body is built when it is sent, from the job as GET /v1/jobs/{id} shows it then.
A job group's record (core/groups.py) has "group", the group's id, in place of "job", and the event
`group.completed`; its body is the group as GET /v1/groups/{id} shows it.
"""

import json
import logging
import uuid
from typing import Any

import redis
from rq.job import Job as RQJob

from core import keys
from core.kinds.base import WebhookEvent

log = logging.getLogger(__name__)
DEFAULT_EVENTS = ("completed",)
PROGRESS_INTERVAL_S = 1.0  # at most one progress POST per second per job


def wants(params: dict[str, Any], event: WebhookEvent) -> bool:
    """Whether the job's request asked for a POST on `event`."""
    return bool(params.get("webhook")) and event in params.get("webhook_events", DEFAULT_EVENTS)


def outbox_record(job: RQJob, event: WebhookEvent) -> str | None:
    """The outbox record (JSON) of `event` for the job, or None if the job did not ask for that POST."""
    params = job.args[0] if job.args else {}
    if not isinstance(params, dict) or not wants(params, event):
        return None
    record = {"id": uuid.uuid4().hex, "job": job.id, "event": event, "tries": 0, "waits": 0}
    if trace := job.meta.get("trace"):  # the job's trace carrier (core/tracing.py): the POST's span joins it
        record["trace"] = trace
    return json.dumps(record)


def announce(conn: redis.Redis, job: RQJob, event: WebhookEvent) -> None:
    """Queues the POST of `event` (start, progress) for the job if it asked for one: one LPUSH. A Redis error is
    logged, never raised: the job's own record matters more than its webhook. A job's end: core/endings.py."""
    record = outbox_record(job, event)
    if record is None:
        return
    try:
        conn.lpush(keys.WEBHOOK_OUTBOX, record)
    except redis.RedisError as exc:
        log.warning("job=%s webhook %s not queued (%s)", job.id, event, exc)
