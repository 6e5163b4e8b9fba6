"""Job groups in Redis (docs/api.md, "Groups"): the group's record, and the count of its members' ends that fires
its webhook once.

A group is a hash, `keys.group(id)`: owner, created_at, total, the member ids (JSON), the `ended` count, its TTL,
its webhook URL if it has one and `fired` once that webhook is queued. It is written in the same transaction as its
jobs (service/groups.py, through `JobRepo.enqueue`), so a group is never there without all its jobs nor a job
without its group. Each member's end (core/endings.py, wherever the job ends) runs `ENDED`: a Lua script, so the
count, its comparison with the total and the outbox record are one atomic step even on a pipeline that is not a
transaction. Members are counted once each (a set of the ended ones), so a job ended twice, by a cancel racing its
worker, neither counts twice nor fires twice. Each end also renews the group's time-to-live: it outlives its last
member's end by `ARTIFACT_TTL_S`, as a job does its own.
"""

import json
import uuid
from dataclasses import dataclass

import redis
from redis.client import Pipeline
from redis.typing import EncodableT, FieldT
from rq.job import Job as RQJob

from core import keys

GROUP_EVENT = "group.completed"  # the webhook's event: every member has ended

# KEYS: the group's hash, its set of ended members, the outbox. ARGV: the member's id, the outbox record.
# Returns the ended count, or -1 for a group that is gone, or -2 for a member counted already.
ENDED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return -2 end
local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl_s'))
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
local ended = redis.call('HINCRBY', KEYS[1], 'ended', 1)
if ended >= tonumber(redis.call('HGET', KEYS[1], 'total')) and redis.call('HEXISTS', KEYS[1], 'webhook') == 1
    and redis.call('HSETNX', KEYS[1], 'fired', 1) == 1 then
  redis.call('LPUSH', KEYS[3], ARGV[2])
end
return ended
"""


@dataclass
class GroupRecord:
    id: str
    owner: str
    created_at: str
    job_ids: list[str]
    ended: int  # members whose end was recorded
    webhook: str | None

    @property
    def total(self) -> int:
        return len(self.job_ids)


def write(pipe: Pipeline, record: GroupRecord, ttl_s: int) -> None:
    """Queues the new group's record on `pipe` (the enqueue's transaction)."""
    fields: dict[FieldT, EncodableT] = {
        "owner": record.owner,
        "created_at": record.created_at,
        "job_ids": json.dumps(record.job_ids),
        "total": record.total,
        "ended": 0,
        "ttl_s": ttl_s,
    }
    if record.webhook is not None:
        fields["webhook"] = record.webhook
    pipe.hset(keys.group(record.id), mapping=fields)
    pipe.expire(keys.group(record.id), ttl_s)


def read(conn: redis.Redis, group_id: str) -> GroupRecord | None:
    raw: dict[bytes, bytes] = conn.hgetall(keys.group(group_id))  # type: ignore[assignment]
    if not raw or b"owner" not in raw:
        return None
    webhook = raw.get(b"webhook")
    return GroupRecord(
        id=group_id,
        owner=raw[b"owner"].decode(),
        created_at=raw[b"created_at"].decode(),
        job_ids=json.loads(raw[b"job_ids"]),
        ended=int(raw.get(b"ended", 0)),
        webhook=webhook.decode() if webhook else None,
    )


def outbox_record(group_id: str) -> str:
    """The outbox record of the group's webhook (core/outbox.py): "group" in place of "job"."""
    return json.dumps({"id": uuid.uuid4().hex, "group": group_id, "event": GROUP_EVENT, "tries": 0, "waits": 0})


def group_job_ended(pipe: Pipeline, job: RQJob) -> None:
    """Queues on `pipe` the count of a member's end, if the job is in a group. EVAL rather than EVALSHA: a pipeline
    with a script object asks the server for the script (SCRIPT EXISTS) on every execute, a round trip more, and
    Redis caches the script it compiles for EVAL all the same."""
    group_id = job.meta.get("group")
    if not isinstance(group_id, str):
        return
    names = [keys.group(group_id), keys.group_ended(group_id), keys.WEBHOOK_OUTBOX]
    pipe.eval(ENDED, len(names), *names, job.id, outbox_record(group_id))
