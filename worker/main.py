"""The worker process: one RQ `SimpleWorker` (no fork per job, so CUDA and loaded models survive) on one queue.

Handled on purpose (DESIGN.md, "Known RQ traps"): the heartbeat is refreshed from the step hook, with a short
time-to-live, so a dead worker's job is found within a minute and a live one's never; Redis going away makes the
process reconnect with backoff instead of exiting. SIGTERM is RQ's warm shutdown (the job in hand finishes, then the
worker exits); a second SIGTERM stops the job at its next step and puts it back at the front of its queue.
A `sample` job takes the compatible jobs queued behind it along, and they run as one loop (worker/batching.py).
"""

import logging
import time
from datetime import timedelta
from types import FrameType
from typing import Any

import redis
import torch
from redis.client import Pipeline
from rq import Queue, SimpleWorker
from rq.job import Job as RQJob
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.worker import WorkerStatus

from core.images import guard_decoder
from core.logs import job_logging
from core.queues import TRAIN_QUEUE
from core.redis_conn import sync_client
from core.settings import Settings
from worker import context
from worker.allocator import tune_malloc
from worker.batching import claim_batch
from worker.gpu import limit_memory
from worker.model_cache import get_cache
from worker.tasks import run_batch

log = logging.getLogger(__name__)
WORKER_TTL_S = 60  # the worker's own key; also bounds how long a blocking dequeue may wait on a frozen Redis


class DiffusionWorker(SimpleWorker):
    heartbeat_ttl_s = 30
    settings: Settings  # set by make_worker

    def get_heartbeat_ttl(self, job: RQJob, working_time: float = 0.0) -> int:
        return self.heartbeat_ttl_s

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """A second SIGTERM: the job in hand stops at its next step (the step hook) and is queued again; a third,
        or a second while idle, exits at once as RQ does."""
        if self.get_state() == WorkerStatus.BUSY and not context.stopping.is_set():
            if self._shutdown_requested_date and now() - self._shutdown_requested_date < timedelta(seconds=1):
                return  # the same signal twice (a pool and the terminal): RQ ignores it too
            log.warning("second stop signal: the job in hand stops at its next step and goes back to the queue")
            context.stopping.set()
            return
        super().request_force_stop(signum, frame)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """RQ's heartbeat, which also renews what this worker reported of the models it loaded."""
        super().heartbeat(timeout, pipeline)
        get_cache().renew_reports(
            pipeline if pipeline is not None else self.connection, timeout or self.worker_ttl + 60
        )

    def execute_job(self, job: RQJob, queue: Queue) -> None:
        with job_logging(job.id):  # every line logged while the job runs carries its id
            self.execute_one(job, queue)

    def execute_one(self, job: RQJob, queue: Queue) -> None:
        batch = self.claim(job, queue)
        if batch:
            with job_logging(job.id, *(other.id for other in batch)):
                self.execute_batch([job, *batch], queue)
            return
        execution = self.prepare_execution(job)
        token = context.heartbeat.set(lambda: self.maintain_heartbeats(job, execution))
        try:
            self.perform_job(job, queue, execution)
        finally:
            context.heartbeat.reset(token)
        self.set_state(WorkerStatus.IDLE)

    def claim(self, job: RQJob, queue: Queue) -> list[RQJob]:
        """The queued jobs to run with `job` as one batch (worker/batching.py); none if batching is off."""
        settings = self.settings
        shipped = get_cache().specs
        wait_s = settings.batch_wait_ms / 1000
        try:
            return claim_batch(self.connection, queue, job, shipped, settings.batch_max_jobs, settings.max_n, wait_s)
        except redis.RedisError:
            log.exception("job=%s: claiming jobs to batch with failed; it runs alone", job.id)
            return []

    def execute_batch(self, jobs: list[RQJob], queue: Queue) -> None:
        """RQ's `perform_job` for jobs run as one loop: each is registered as started, kept alive and finalised
        (succeeded, or failed and retried) as RQ does it for one."""
        log.info("batch of %d jobs: %s", len(jobs), " ".join(job.id for job in jobs))
        executions = [self.prepare_execution(job) for job in jobs]

        def beat() -> None:
            for job, execution in zip(jobs, executions, strict=True):
                self.maintain_heartbeats(job, execution)

        token = context.heartbeat.set(beat)
        try:
            for job in jobs:
                self.prepare_job_execution(job, remove_from_intermediate_queue=True)
                job.started_at = now()
            timeout = max(job.timeout or self.queue_class.DEFAULT_TIMEOUT for job in jobs)
            try:
                with self.death_penalty_class(timeout, JobTimeoutException, job_id=jobs[0].id):
                    failures = run_batch(jobs)
            except BaseException as exc:  # a job timeout, or a fault outside any one job
                failures = [exc] * len(jobs)
            for job, execution, failure in zip(jobs, executions, failures, strict=True):
                if failure is None:
                    self._finalize_success(job, queue, execution, None)
                else:
                    self._finalize_failure(job, queue, execution, (type(failure), failure, failure.__traceback__))
        finally:
            context.heartbeat.reset(token)
        self.set_state(WorkerStatus.IDLE)


def make_worker(conn: redis.Redis, queue_name: str, settings: Settings, **kwargs: Any) -> DiffusionWorker:
    queue = Queue(queue_name, connection=conn, serializer=JSONSerializer)
    worker = DiffusionWorker(
        [queue], connection=conn, serializer=JSONSerializer, worker_ttl=WORKER_TTL_S, maintenance_interval=30, **kwargs
    )
    worker.heartbeat_ttl_s = settings.heartbeat_ttl_s
    worker.settings = settings
    return worker


def run_worker(queue_name: str, settings: Settings, burst: bool = False) -> int:
    """Serves `queue_name` until stopped (or, with `burst`, until the queue is empty)."""
    log.info("glibc malloc thresholds raised: %s", tune_malloc())
    guard_decoder(settings.image_limits)
    limit_memory(settings.cuda_memory_fraction)
    if queue_name != TRAIN_QUEUE:  # training keeps torch's threads: its batches are large
        torch.set_num_threads(settings.inference_threads)

    backoff = 1.0
    worker: DiffusionWorker | None = None
    while not stop_requested(worker):
        conn = sync_client(settings)
        try:
            conn.ping()
            if worker is None:  # the first connection: the queue's models load before the first job
                get_cache().warm(queue_name, conn)
            worker = make_worker(conn, queue_name, settings)
            backoff = 1.0
            worker.work(burst=burst, logging_level=settings.log_level)
            if burst:
                return 0
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("redis unreachable (%s); reconnecting in %.0f s", exc, backoff)
        if not stop_requested(worker):
            time.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
    return 0


def stop_requested(worker: DiffusionWorker | None) -> bool:
    """SIGINT or SIGTERM reached the worker (RQ records the date; `_stop_requested` is set only when busy)."""
    return worker is not None and worker._shutdown_requested_date is not None
