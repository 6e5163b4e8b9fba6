"""The worker process: one RQ `SimpleWorker` (no fork per job, so CUDA and loaded models survive) on one pool's
queues, high before normal before low (core/queues.py).

Handled on purpose (docs/architecture.md, "Known RQ traps"): the heartbeat is refreshed from the step hook, with a short
time-to-live, so a dead worker's job is found within a minute and a live one's never; Redis going away makes the
process reconnect with backoff instead of exiting. SIGTERM is RQ's warm shutdown (the job in hand finishes, then the
worker exits); a second SIGTERM stops the job at its next step and puts it back at the front of its queue.
A `sample` job takes the compatible jobs queued behind it along, and they run as one loop (worker/batching.py).
"""

import logging
import time
from typing import Any

import redis
import torch
from redis.client import Pipeline
from rq import Queue
from rq.job import Job as RQJob
from rq.serializers import JSONSerializer

from core.images import guard_decoder
from core.logs import job_logging
from core.queue_place import higher_queues
from core.queues import TRAIN_QUEUE, pool_queues
from core.redis_conn import sync_client
from core.rq_internals import HookedWorker, queue_list_key
from core.settings import Settings
from core.tracing import setup_tracing
from worker import context, worker_info
from worker.allocator import tune_malloc
from worker.batching import claim_batch
from worker.gpu import limit_memory
from worker.job_tracing import traced, traced_along
from worker.model_cache import get_cache
from worker.tasks import run_batch

log = logging.getLogger(__name__)
WORKER_TTL_S = 60  # the worker's own key; also bounds how long a blocking dequeue may wait on a frozen Redis


class DiffusionWorker(HookedWorker):
    """RQ's internals it relies on are HookedWorker's (core/rq_internals.py); it overrides only that class's hooks."""

    settings: Settings  # set by make_worker

    def on_force_stop(self) -> bool:
        """A second SIGTERM: the job in hand stops at its next step (the step hook) and is queued again; a third,
        or a second while idle, exits at once as RQ does."""
        if self.is_busy() and not context.stopping.is_set():
            if self.stop_signal_repeated():
                return True  # the same signal twice (a pool and the terminal): RQ ignores it too
            log.warning("second stop signal: the job in hand stops at its next step and goes back to the queue")
            context.stopping.set()
            return True
        return False

    def on_heartbeat(self, conn: redis.Redis | Pipeline, ttl_s: int) -> None:
        """RQ's heartbeat also renews what this worker reported of the models it loaded, and what it runs on."""
        get_cache().renew_reports(conn, ttl_s)
        worker_info.report(conn, self.name, ttl_s)

    def run_dequeued(self, job: RQJob, queue: Queue) -> None:
        with job_logging(job.id), traced(job):  # every line logged while the job runs carries its id; its span
            self.execute_one(job, queue)

    def execute_one(self, job: RQJob, queue: Queue) -> None:
        batch = self.claim(job, queue)
        if batch:
            with job_logging(job.id, *(other.id for other in batch)), traced_along(job, batch):
                self.execute_batch([job, *batch], queue)
            return
        execution = self.start_execution(job)
        token = context.heartbeat.set(lambda: self.beat(job, execution))
        try:
            self.perform(job, queue, execution)
        finally:
            context.heartbeat.reset(token)
        self.set_idle()

    def claim(self, job: RQJob, queue: Queue) -> list[RQJob]:
        """The queued jobs to run with `job` as one batch (worker/batching.py); none if batching is off."""
        settings = self.settings
        shipped = get_cache().specs
        wait_s = settings.batch_wait_ms / 1000
        try:
            higher = [queue_list_key(name) for name in higher_queues(queue.name)]
            return claim_batch(
                self.connection, queue, job, shipped, settings.batch_max_jobs, settings.max_n, wait_s, higher
            )
        except redis.RedisError:
            log.exception("job=%s: claiming jobs to batch with failed; it runs alone", job.id)
            return []

    def execute_batch(self, jobs: list[RQJob], queue: Queue) -> None:
        """RQ's `perform_job` for jobs run as one loop: each is registered as started, kept alive and finalised
        (succeeded, or failed and retried) as RQ does it for one."""
        log.info("batch of %d jobs: %s", len(jobs), " ".join(job.id for job in jobs))
        executions = [self.start_execution(job) for job in jobs]

        def beat() -> None:
            for job, execution in zip(jobs, executions, strict=True):
                self.beat(job, execution)

        token = context.heartbeat.set(beat)
        try:
            for job in jobs:
                self.start_claimed(job)
            timeout = max(self.job_timeout(job) for job in jobs)
            try:
                with self.time_limit(timeout, jobs[0].id):
                    failures = run_batch(jobs)
            except BaseException as exc:  # a job timeout, or a fault outside any one job
                failures = [exc] * len(jobs)
            for job, execution, failure in zip(jobs, executions, failures, strict=True):
                if failure is None:
                    self.finish_succeeded(job, queue, execution)
                else:
                    self.finish_failed(job, queue, execution, failure)
        finally:
            context.heartbeat.reset(token)
        self.set_idle()


def make_worker(conn: redis.Redis, pool: str, settings: Settings, **kwargs: Any) -> DiffusionWorker:
    """A worker of `pool`: its queues in priority order, which RQ's dequeue takes in turn (high, normal, low)."""
    queues = [Queue(name, connection=conn, serializer=JSONSerializer) for name in pool_queues(pool)]
    worker = DiffusionWorker(
        queues, connection=conn, serializer=JSONSerializer, worker_ttl=WORKER_TTL_S, maintenance_interval=30, **kwargs
    )
    worker.heartbeat_ttl_s = settings.heartbeat_ttl_s
    worker.settings = settings
    return worker


def run_worker(queue_name: str, settings: Settings, burst: bool = False) -> int:
    """Serves the pool `queue_name` until stopped (or, with `burst`, until its queues are empty)."""
    log.info("glibc malloc thresholds raised: %s", tune_malloc())
    setup_tracing("diffusion-jobs-worker")  # only where OTEL_* ask for traces (core/tracing.py)
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
    """SIGINT or SIGTERM reached the worker."""
    return worker is not None and worker.shutdown_requested()
