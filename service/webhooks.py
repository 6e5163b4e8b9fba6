"""Webhooks: the outbox that a job's events go into, and the signature of each POST.

Whoever sees an event only appends a small record to a Redis list: the worker (start, progress, completed), the API
(a queued job canceled by DELETE) and the reaper (a job failed as worker_lost). One LPUSH, so the sampling loop never
waits on a receiver, and Redis (append-only) keeps what it accepted through a crash of anyone. The API processes'
deliverers (service/webhook_delivery.py) make the POSTs. RQ's own `Webhook` is no fit: it POSTs from the worker,
inside the job's finalisation, once, unsigned, and only for the end.

A record is `{"id": delivery id, "job": job id, "event": ..., "tries": n, "waits": n}`; the body is built when it is
sent, from the job as GET /v1/jobs/{id} shows it then, so it is always the Job (and large inline inputs are never
copied into the outbox). Two keys:
- `WEBHOOK_OUTBOX`, a list: new records, oldest at the right.
- `WEBHOOK_PENDING`, a zset: records being tried, scored by when the try's lease runs out, and records waiting for a
  retry, scored by when it is due.
`CLAIM` (one Lua script, so atomic) takes the first pending record that is due, else the oldest new one, and scores
it now + lease: no other deliverer takes it while it is tried, and one that dies mid-try leaves it to be taken again
once the lease runs out. Success, or the last try failing, removes it; a failed try replaces it with the same record,
`tries` + 1, due after an exponential backoff. Times are Redis's (`TIME`), so deliverers whose clocks differ agree.

Delivery is at least once (a deliverer may die after the POST and before it records it): every try of one record
carries the same `X-Diffusion-Jobs-Delivery`, for receivers to de-duplicate. Retries may reorder deliveries; the
body's status and progress say where the job is.
"""

import hashlib
import hmac
import logging

from core.errors import InvalidRequest
from core.kinds.base import JobBase

log = logging.getLogger(__name__)
HEADER = "X-Diffusion-Jobs-"  # the prefix of the headers of every POST: Signature, Timestamp, Event, Delivery

CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local record = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1)[1]
if not record then
  record = redis.call('RPOP', KEYS[1])
  if not record then return false end
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), record)
return record
"""
RESCHEDULE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[1], tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[3]), ARGV[2])
end
return 0
"""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>` under the secret (the Signature header)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def signed_headers(secret: str, event: str, delivery: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        f"{HEADER}Event": event,
        f"{HEADER}Delivery": delivery,
        f"{HEADER}Timestamp": str(timestamp),
        f"{HEADER}Signature": signature(secret, str(timestamp), body),
    }


def check_enabled(req: JobBase, secret: str | None) -> None:
    """A job may ask for a webhook only where POSTs can be signed (docs/api.md: 422 naming the field)."""
    if req.webhook is not None and not secret:
        raise InvalidRequest.field(["webhook"], "this server has no WEBHOOK_SECRET set, so it sends no webhooks")
