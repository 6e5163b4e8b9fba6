"""Job groups (docs/api.md, "Groups"): many jobs admitted together, enqueued all or none, read and canceled as one.

Every item passes the same checks as POST /v1/jobs before any is queued; the first that fails names its index. The
jobs and the group's record (core/groups.py) go into Redis in one transaction (`JobRepo.enqueue`). A group's view
counts its members' statuses from the jobs themselves, so it is exact.
"""

import uuid
from typing import get_args

import redis

from core import groups, keys
from core.errors import InvalidRequest, NotFound, ServiceError
from core.groups import GroupRecord
from core.job_state import now_iso, status_and_error
from core.kinds.base import JobBase
from core.kinds.train import TrainJob
from core.model_spec import ModelSpec
from core.schemas.responses import TERMINAL, Group, Status
from core.settings import Settings
from service.admission import admit
from service.jobs import Entry, JobRepo, fetch_many, key_digest, remember, remembered
from service.webhooks import check_enabled

NO_WEBHOOKS = "this server has no WEBHOOK_SECRET set, so it sends no webhooks"


def at_item(exc: ServiceError, index: int) -> ServiceError:
    """The item's error as the group's: its message and each detail's `loc` put under ["jobs", index]."""
    exc.message = f"jobs.{index}.{exc.message}"
    for detail in exc.details:
        loc = detail.get("loc")
        if isinstance(loc, list) and loc[:1] == ["body"]:
            detail["loc"] = ["body", "jobs", index, *loc[1:]]
    return exc


def admit_items(
    conn: redis.Redis, models: dict[str, ModelSpec], owner: str, reqs: list[JobBase], settings: Settings
) -> list[str]:
    """Each item's pool, once every item passed the checks of POST /v1/jobs; the first that fails is the error."""
    if len(reqs) > settings.max_group_jobs:
        raise InvalidRequest.field(["jobs"], f"at most {settings.max_group_jobs} jobs in one group on this deployment")
    pools = []
    for index, req in enumerate(reqs):
        try:
            if isinstance(req, TrainJob):
                raise InvalidRequest.field(["kind"], "train jobs are submitted one at a time, with POST /v1/jobs")
            check_enabled(req, settings.webhook_secret)
            pools.append(admit(conn, models, owner, req, settings))
        except ServiceError as exc:
            raise at_item(exc, index) from None
    return pools


class GroupRepo:
    def __init__(self, repo: JobRepo) -> None:
        self.repo = repo
        self.conn = repo.conn
        self.settings = repo.settings

    def create(
        self,
        owner: str,
        reqs: list[JobBase],
        webhook: str | None,
        models: dict[str, ModelSpec],
        idempotency_key: str | None = None,
        digest: str = "",
    ) -> Group:
        """Admits every item, then enqueues them all with the group's record, in one transaction. With an
        Idempotency-Key, the same body again answers the group the first request made (a retry after a 503 that
        the group survived makes no second group), another body 409; a refused group leaves the key free."""
        if webhook is not None and not self.settings.webhook_secret:
            raise InvalidRequest.field(["webhook"], NO_WEBHOOKS)
        group_id = str(uuid.uuid4())
        ttl = self.settings.artifact_ttl_s
        idem = keys.group_idempotency(owner, key_digest(idempotency_key)) if idempotency_key is not None else None
        if idem is not None and (earlier := remembered(self.conn, idem, digest, group_id, ttl, "group")) is not None:
            try:
                return view(self.conn, self.fetch(owner, earlier))
            except NotFound:
                remember(self.conn, idem, digest, group_id, ttl)  # its group expired: start anew
        try:
            pools = admit_items(self.conn, models, owner, reqs, self.settings)
            entries = [Entry(req, pool, meta={"group": group_id}) for req, pool in zip(reqs, pools, strict=True)]
            record = GroupRecord(group_id, owner, now_iso(), [entry.job_id for entry in entries], 0, webhook)
            self.repo.enqueue(owner, entries, extra=lambda pipe, _jobs: groups.write(pipe, record, ttl))
        except Exception:
            if idem is not None:
                self.conn.delete(idem)  # refused: the key stays free for a corrected request
            raise
        return view(self.conn, record)

    def fetch(self, owner: str, group_id: str) -> GroupRecord:
        record = groups.read(self.conn, group_id)
        if record is None or record.owner != owner:
            raise NotFound(f"No group {group_id} of yours exists (a group expires after its last job's time-to-live).")
        return record

    def get(self, owner: str, group_id: str) -> Group:
        return view(self.conn, self.fetch(owner, group_id))

    def cancel(self, owner: str, group_id: str) -> Group:
        """Cancels every member that has not ended (idempotent); a running one stops at its next step."""
        record = self.fetch(owner, group_id)
        for job_id, job in zip(record.job_ids, fetch_many(self.conn, record.job_ids), strict=True):
            if job is not None and status_and_error(job)[0] not in TERMINAL:
                try:
                    self.repo.cancel(owner, job_id)
                except NotFound:
                    continue  # it expired in the meantime: it had ended
        return view(self.conn, record)


def view(conn: redis.Redis, record: GroupRecord) -> Group:
    """The group as GET /v1/groups/{id} shows it: each member's status read from the job itself."""
    counts = dict.fromkeys(get_args(Status), 0)
    expired = 0
    for job in fetch_many(conn, record.job_ids):
        if job is None:
            expired += 1
        else:
            counts[status_and_error(job)[0]] += 1
    done = expired + sum(counts[status] for status in TERMINAL) == record.total
    return Group(
        id=record.id,
        created_at=record.created_at,
        total=record.total,
        counts=counts,
        expired=expired,
        done=done,
        status="completed" if done else "running",
        job_ids=record.job_ids,
        webhook=record.webhook,
    )


def group_body(conn: redis.Redis, group_id: str) -> tuple[str, str, bytes] | None:
    """The group's webhook URL, status and Group JSON (service/webhook_delivery.py); None if it is gone or has no
    webhook."""
    record = groups.read(conn, group_id)
    if record is None or record.webhook is None:
        return None
    group = view(conn, record)
    return record.webhook, group.status, group.model_dump_json().encode()
