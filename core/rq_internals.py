"""Every use of RQ's internals, in one place: what python-rq.org does not document, yet the API and the workers rely on.

pyproject.toml pins rq to the tested minor; tests/service/test_rq_internals.py has a test per internal here (its
signature, its attribute, the behaviour relied on, on a real Redis) that fails when a new RQ release changes it.
Nothing else in core/, service/ or worker/ touches them: each function and method names the internal it wraps.

The worker's overrides of RQ's own methods live in `HookedWorker`; worker/main.DiffusionWorker overrides only the hooks
it offers (`run_dequeued`, `on_force_stop`, `on_heartbeat`).
"""

import math
import time
from datetime import timedelta
from types import FrameType

import redis
from redis.client import Pipeline
from rq import Queue, SimpleWorker, Worker
from rq.exceptions import AbandonedJobError
from rq.executions import Execution
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.registry import DeferredJobRegistry, FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty, JobTimeoutException
from rq.utils import now
from rq.worker import WorkerStatus
from rq.worker_registration import WORKERS_BY_QUEUE_KEY, get_keys

from core.pause import paused

# -- Redis layout --------------------------------------------------------------------------------------------------


def queue_key(queue: Queue) -> str:
    """RQ internal: `Queue.key`, the Redis list of the queue's waiting job ids (enqueue pushes at its tail, dequeue
    moves from its head). Read and edited directly: its length, a scan of its head, a job taken back out."""
    return str(queue.key)


def intermediate_queue_key(queue: Queue) -> str:
    """RQ internal: `Queue.intermediate_queue_key`, the list a dequeued job waits in until
    `prepare_job_execution(..., remove_from_intermediate_queue=True)` removes it (RQ's maintenance puts a job left
    there back in its queue). A batch claims jobs by moving them there, as RQ's dequeue does."""
    return str(queue.intermediate_queue_key)


def job_key(job_id: str) -> str:
    """RQ internal: `Job.key_for(job_id)`, the Redis hash that holds a job (deleted to take a job back; read with
    HGETALL in a plain pipeline, see `job_from_hash`)."""
    return RQJob.key_for(job_id)


def job_from_hash(conn: redis.Redis, job_id: str, row: dict[bytes, bytes]) -> RQJob:
    """RQ internal: `Job.restore(raw_data)`, a job built from its hash as HGETALL returned it (what `Job.fetch`
    does after its own read)."""
    job = RQJob(job_id, connection=conn, serializer=JSONSerializer)
    job.restore(row)
    return job


def worker_key(name: str) -> str:
    """RQ internal: `Worker.redis_worker_namespace_prefix`, the prefix of a worker's key (its registration hash,
    expiring unless heartbeats renew it)."""
    return Worker.redis_worker_namespace_prefix + name


def worker_keys(queue: Queue) -> set[str]:
    """RQ internal: `rq.worker_registration.get_keys(queue=...)`, the keys of the workers registered on a queue
    (a worker killed without its clean-up stays registered until RQ's maintenance; its key expires)."""
    return get_keys(queue=queue)


def queue_list_key(name: str) -> str:
    """RQ internal: `Queue.key` of the queue called `name`, without building a Queue (which asks the server's
    version): the list read with LLEN in a pipeline of other reads."""
    return Queue.redis_queue_namespace_prefix + name


def workers_by_queue_key(name: str) -> str:
    """RQ internal: `rq.worker_registration.WORKERS_BY_QUEUE_KEY`, the set of the workers registered on a queue
    (SCARD counts them in a pipeline; `worker_keys` cleans nothing either)."""
    return WORKERS_BY_QUEUE_KEY % name


# -- Registries ----------------------------------------------------------------------------------------------------


def started_count(conn: redis.Redis, queue_name: str) -> int:
    """RQ internal: `StartedJobRegistry.get_job_count(cleanup=False)`, the jobs a worker holds, counted without the
    clean-up that `count` runs first (the reaper cleans, not a metrics scrape)."""
    registry = StartedJobRegistry(queue_name, connection=conn, serializer=JSONSerializer)
    return registry.get_job_count(cleanup=False)


def registry_counts(conn: redis.Redis, queue_name: str) -> dict[str, int]:
    """RQ internal: `BaseRegistry.get_job_count(cleanup=False)` of a queue's started, failed, deferred and scheduled
    registries, counted without the clean-up that `count` runs first (for the admin's view of the queues)."""
    registries = {
        "started": StartedJobRegistry,
        "failed": FailedJobRegistry,
        "deferred": DeferredJobRegistry,
        "scheduled": ScheduledJobRegistry,
    }
    return {
        name: cls(queue_name, connection=conn, serializer=JSONSerializer).get_job_count(cleanup=False)
        for name, cls in registries.items()
    }


def reap_abandoned(conn: redis.Redis, queue_name: str) -> list[str]:
    """RQ internals: `StartedJobRegistry.get_expired_job_ids()` and `StartedJobRegistry.cleanup()`, which retries
    each abandoned job (one whose heartbeat expired) with retries left and fails the others with an
    `AbandonedJobError` (see `lost_by_worker`). Returns the expired ids, cleaned up or not."""
    registry = StartedJobRegistry(queue_name, connection=conn, serializer=JSONSerializer)
    expired: list[str] = registry.get_expired_job_ids()
    if expired:
        registry.cleanup()
    return expired


def lost_by_worker(result: Result | None) -> bool:
    """RQ internal: the failure `StartedJobRegistry.cleanup` records for an abandoned job on its last attempt, whose
    `exc_string` names `rq.exceptions.AbandonedJobError`."""
    return result is not None and AbandonedJobError.__name__ in (result.exc_string or "")


# -- Jobs ----------------------------------------------------------------------------------------------------------


def retries_left(job: RQJob) -> int:
    """RQ internal: `Job.retries_left`, the attempts RQ's retry path still grants a job that raises (None: no
    `Retry`)."""
    return job.retries_left or 0


def requeue_at_front_for_free(job: RQJob) -> None:
    """RQ internals: `Job.retries_left` and `Job.enqueue_at_front_on_retry`, read by RQ's failure handling
    (`handle_job_failure`: a job with retries left is queued again, at the front with the flag). One more retry
    granted, so the job, about to raise, goes back to the front of its queue at no cost of an attempt."""
    job.retries_left = retries_left(job) + 1
    job.enqueue_at_front_on_retry = True


def requeue_ended(job: RQJob) -> None:
    """RQ internals: `FailedJobRegistry.requeue(job)` for a job RQ failed, or `FinishedJobRegistry.remove(job)` and
    `Queue.enqueue_job(job)` for one the worker ended itself (RQ finished it); then `Job.key` kept (PERSIST) past the
    time-to-live its end gave it. The job, saved with its meta as it is now, goes to the back of its own queue
    (`Job.origin`) for one more attempt."""
    if job.get_status(refresh=False) == JobStatus.FAILED:
        job.requeue()
    else:
        queue = Queue(job.origin, connection=job.connection, serializer=JSONSerializer)
        queue.finished_job_registry.remove(job)
        job.started_at = job.ended_at = None
        queue.enqueue_job(job)
    job.connection.persist(job.key)


def put_back(job: RQJob, queue: Queue) -> None:
    """RQ internals: `Queue.key` and `Queue.intermediate_queue_key`. A job just dequeued, not yet started, back at the
    front of its queue as if never taken (out of the intermediate list, where a dequeue from one queue moves it)."""
    with job.connection.pipeline() as pipe:
        pipe.lrem(intermediate_queue_key(queue), 0, job.id)
        pipe.lpush(queue_key(queue), job.id)
        pipe.execute()


# -- The worker ----------------------------------------------------------------------------------------------------


class HookedWorker(SimpleWorker):
    """RQ's in-process worker, whose internal methods the worker overrides or calls here only, behind names of ours.

    Subclasses override the hooks `run_dequeued`, `on_force_stop`, `on_heartbeat` and `paused_queues`, never RQ's
    methods."""

    heartbeat_ttl_s = 30  # a running job's heartbeat time-to-live
    pause_poll_s = 2  # the longest one wait for a job blocks, so a queue paused or resumed is seen this soon

    # RQ's methods, overridden.

    def get_heartbeat_ttl(self, job: RQJob, working_time: float = 0.0) -> int:
        """RQ internal: `BaseWorker.get_heartbeat_ttl(job, working_time)`, the time-to-live RQ gives a running job's
        heartbeat (its started-registry entry): a fixed, short one, renewed from the step hook."""
        return self.heartbeat_ttl_s

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """RQ internal: `BaseWorker.request_force_stop(signum, frame)`, the handler RQ's `request_stop` installs for a
        second SIGINT or SIGTERM (cold shutdown). `on_force_stop` may keep the worker running instead."""
        if self.on_force_stop():
            return
        super().request_force_stop(signum, frame)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """RQ internal: `BaseWorker.heartbeat(timeout, pipeline)`, which renews the worker's key (for `timeout`, or
        `worker_ttl` + 60 s); RQ calls it idle and, in a pipeline, from `maintain_heartbeats`. Then `on_heartbeat`."""
        super().heartbeat(timeout, pipeline)
        self.on_heartbeat(pipeline if pipeline is not None else self.connection, timeout or self.worker_ttl + 60)

    def execute_job(self, job: RQJob, queue: Queue) -> None:
        """RQ internal: `BaseWorker.execute_job(job, queue)`, which the work loop calls with each dequeued job."""
        self.run_dequeued(job, queue)

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[RQJob, Queue] | None:
        """RQ internals: `BaseWorker.dequeue_job_and_maintain_ttl(timeout, max_idle_time)`, the work loop's wait for a
        job (`timeout` None: burst, none; None back when idle `max_idle_time`), and `BaseWorker._ordered_queues`, the
        queues it takes from, in order. Each wait blocks at most `pause_poll_s`, on the queues `paused_queues` leaves;
        with all of them paused the worker waits, its heartbeat kept; a job taken from a queue paused meanwhile goes
        back to the front of that queue untouched, so a pause is exact."""
        deadline = None if max_idle_time is None else time.monotonic() + max_idle_time
        while True:
            wait = None if timeout is None else min(timeout, self.pause_poll_s)
            if deadline is not None:
                left = math.ceil(deadline - time.monotonic())
                if left <= 0:
                    return None
                wait = None if wait is None else min(wait, left)
            skipped = self.paused_queues()
            open_queues = [queue for queue in self.queues if queue.name not in skipped]
            if not open_queues:
                if wait is None:
                    return None
                self.heartbeat()
                self.set_idle()
                time.sleep(wait)
                continue
            self._ordered_queues = open_queues
            result = super().dequeue_job_and_maintain_ttl(wait, max_idle_time=wait)
            if result is None:
                if timeout is None:
                    return None
                continue
            job, queue = result
            if queue.name in self.paused_queues():
                put_back(job, queue)
                continue
            return result

    # The hooks.

    def run_dequeued(self, job: RQJob, queue: Queue) -> None:
        """Runs a job RQ dequeued; by default as RQ's `SimpleWorker` does."""
        self.perform(job, queue, self.start_execution(job))
        self.set_idle()

    def on_force_stop(self) -> bool:
        """A second stop signal: True to go on, False for RQ's cold shutdown."""
        return False

    def on_heartbeat(self, conn: redis.Redis | Pipeline, ttl_s: int) -> None:
        """After each heartbeat, on its connection or pipeline, with its time-to-live."""

    def paused_queues(self) -> set[str]:
        """The names of the queues to take no job from now; by default the paused ones (core/pause.py). Redis
        unreachable: none, and RQ's own dequeue meets the outage and waits it out."""
        try:
            return paused(self.connection)
        except (redis.ConnectionError, redis.TimeoutError):
            return set()

    # RQ's methods and attributes, called.

    def start_execution(self, job: RQJob) -> Execution:
        """RQ internal: `BaseWorker.prepare_execution(job)`, the job's execution record (the started registry's
        entry, that heartbeats renew)."""
        return self.prepare_execution(job)

    def beat(self, job: RQJob, execution: Execution) -> None:
        """RQ internal: `BaseWorker.maintain_heartbeats(job, execution)`: the worker's, the execution's and the job's
        heartbeats, renewed in one round trip."""
        self.maintain_heartbeats(job, execution)

    def perform(self, job: RQJob, queue: Queue, execution: Execution) -> None:
        """RQ internal: `BaseWorker.perform_job(job, queue, execution)`: the job registered as started, run under its
        timeout and finalised (succeeded, or failed and retried)."""
        self.perform_job(job, queue, execution)

    def start_claimed(self, job: RQJob) -> None:
        """RQ internals: `BaseWorker.prepare_job_execution(job, remove_from_intermediate_queue=True)` and
        `rq.utils.now`: a job claimed into its queue's intermediate list registered as started, as `perform_job`
        does it (and taken out of that list)."""
        self.prepare_job_execution(job, remove_from_intermediate_queue=True)
        job.started_at = now()

    def job_timeout(self, job: RQJob) -> int:
        """RQ internal: `Queue.DEFAULT_TIMEOUT` (of the worker's `queue_class`), the timeout of a job without one."""
        return int(job.timeout or self.queue_class.DEFAULT_TIMEOUT)

    def time_limit(self, timeout: int, job_id: str) -> BaseDeathPenalty:
        """RQ internal: `BaseWorker.death_penalty_class(timeout, JobTimeoutException, job_id=...)`, used as a context
        manager: raises `JobTimeoutException` in the block after `timeout` seconds, as around `job.perform()`."""
        return self.death_penalty_class(timeout, JobTimeoutException, job_id=job_id)

    def finish_succeeded(self, job: RQJob, queue: Queue, execution: Execution) -> None:
        """RQ internal: `BaseWorker._finalize_success(job, queue, execution, return_value)`, what `perform_job` does
        with a job that returned (None here): finished, its result kept, out of the started registry."""
        self._finalize_success(job, queue, execution, None)

    def finish_failed(self, job: RQJob, queue: Queue, execution: Execution, failure: BaseException) -> None:
        """RQ internal: `BaseWorker._finalize_failure(job, queue, execution, exc_info)`, what `perform_job` does with a
        job that raised: retried if it has retries left, else failed with the exception's traceback."""
        self._finalize_failure(job, queue, execution, (type(failure), failure, failure.__traceback__))

    def is_busy(self) -> bool:
        """RQ internals: `BaseWorker.get_state()` and `WorkerStatus.BUSY`: a job is in hand."""
        return bool(self.get_state() == WorkerStatus.BUSY)

    def set_idle(self) -> None:
        """RQ internals: `BaseWorker.set_state(...)` and `WorkerStatus.IDLE`, as after each job."""
        self.set_state(WorkerStatus.IDLE)

    def shutdown_requested(self) -> bool:
        """RQ internal: `BaseWorker._shutdown_requested_date`, set by `request_stop` on SIGINT or SIGTERM (RQ's
        `_stop_requested` is set only when busy)."""
        return self._shutdown_requested_date is not None

    def stop_signal_repeated(self) -> bool:
        """RQ internals: `BaseWorker._shutdown_requested_date` and `rq.utils.now`: a stop signal less than a second
        after the last, the same signal twice (a pool and the terminal), which RQ's `request_force_stop` ignores."""
        requested = self._shutdown_requested_date
        return requested is not None and now() - requested < timedelta(seconds=1)
