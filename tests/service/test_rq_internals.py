"""One test per RQ internal that core/rq_internals.py wraps: each fails if a new RQ release changes the signature,
the attribute or the behaviour the API and the workers rely on. Real RQ objects on a real Redis; no mocks."""

import inspect
import signal
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, ClassVar

import pytest
import redis
import rq
from redis.client import Pipeline
from rq import Queue, Retry, SimpleWorker
from rq.exceptions import StopRequested
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty, JobTimeoutException
from rq.utils import now
from rq.worker_registration import get_keys

from core import pause
from core import rq_internals as ri
from core.rq_internals import HookedWorker
from tests.helpers import fresh_database

QUEUE = "rq-internals"


@pytest.fixture
def conn(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(fresh_database(redis_url)) as c:
        yield c


@pytest.fixture
def queue(conn: redis.Redis) -> Queue:
    return Queue(QUEUE, connection=conn, serializer=JSONSerializer)


@pytest.fixture
def signals() -> Iterator[None]:
    """RQ installs its own SIGINT and SIGTERM handlers (request_stop, work); the test's are put back after."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


class Recording(HookedWorker):
    """A HookedWorker whose hooks record their calls."""

    go_on = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beats: list[tuple[bool, int]] = []  # (on a pipeline, ttl)
        self.dequeued: list[str] = []

    def on_heartbeat(self, conn: redis.Redis | Pipeline, ttl_s: int) -> None:
        self.beats.append((isinstance(conn, Pipeline), ttl_s))

    def on_force_stop(self) -> bool:
        return self.go_on


def make_worker(queue: Queue, cls: type[HookedWorker] = HookedWorker, **kwargs: Any) -> HookedWorker:
    return cls([queue], connection=queue.connection, serializer=JSONSerializer, **kwargs)


def enqueue(queue: Queue, func: str = "builtins.len", *args: Any, **kwargs: Any) -> RQJob:
    return queue.enqueue_call(func, args=list(args) or [[1, 2]], **kwargs)


def dequeue(queue: Queue) -> RQJob:
    """As RQ's work loop takes a job: out of the queue's list into its intermediate list."""
    found = Queue.dequeue_any([queue], None, connection=queue.connection, serializer=JSONSerializer)
    assert found is not None
    return found[0]


def params(func: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(func).parameters)


def ids(conn: redis.Redis, key: str) -> list[str]:
    return [raw.decode() for raw in conn.lrange(key, 0, -1)]


def started(worker: HookedWorker, job: RQJob) -> Any:
    """A dequeued job registered as started the way the batch path does it; its execution."""
    execution = worker.start_execution(job)
    worker.start_claimed(job)
    return execution


def test_rq_is_the_pinned_minor():
    assert rq.__version__.startswith("3.0."), "core/rq_internals.py was checked against rq 3.0 only"


def test_our_hook_and_helper_names_shadow_nothing_of_rqs():
    ours = {name for name in vars(HookedWorker) if not name.startswith("__")}
    overridden = {"get_heartbeat_ttl", "request_force_stop", "heartbeat", "execute_job", "dequeue_job_and_maintain_ttl"}
    assert overridden <= ours
    for name in overridden:
        assert callable(getattr(SimpleWorker, name)), name
    for name in ours - overridden:
        assert not hasattr(SimpleWorker, name), f"RQ now has a {name!r} of its own that HookedWorker overrides"


# -- Redis layout --------------------------------------------------------------------------------------------------


def test_queue_key_is_the_list_of_waiting_job_ids(conn, queue):
    assert isinstance(Queue.key, property)
    first, second = enqueue(queue), enqueue(queue)
    assert ids(conn, ri.queue_key(queue)) == [first.id, second.id] == queue.job_ids
    assert conn.llen(ri.queue_key(queue)) == queue.count == 2


def test_dequeue_moves_a_job_to_the_intermediate_list_and_maintenance_handles_one_left_there(conn, queue):
    job = enqueue(queue, retry=Retry(max=1))
    assert dequeue(queue).id == job.id
    assert ids(conn, ri.queue_key(queue)) == []
    assert ids(conn, ri.intermediate_queue_key(queue)) == [job.id]
    # A worker that died before registering it: RQ's maintenance sees it, then after a minute retries it.
    worker = make_worker(queue)
    queue.intermediate_queue.cleanup(worker, queue)
    assert ids(conn, ri.intermediate_queue_key(queue)) == [job.id]
    conn.set(queue.intermediate_queue.get_first_seen_key(job.id), (now() - timedelta(minutes=2)).timestamp())
    queue.intermediate_queue.cleanup(worker, queue)
    assert ids(conn, ri.intermediate_queue_key(queue)) == []
    assert ids(conn, ri.queue_key(queue)) == [job.id]


def test_job_key_holds_the_job_and_restore_rebuilds_it(conn, queue):
    assert params(RQJob.key_for) == ["job_id"]
    assert params(RQJob.restore) == ["self", "raw_data"]
    job = enqueue(queue, "builtins.len", [1, 2, 3], meta={"owner": "me"})
    row = conn.hgetall(ri.job_key(job.id))
    assert row
    rebuilt = ri.job_from_hash(conn, job.id, row)
    assert (rebuilt.id, rebuilt.args, rebuilt.meta, rebuilt.origin) == (job.id, [[1, 2, 3]], {"owner": "me"}, QUEUE)
    assert rebuilt.get_status(refresh=False) == JobStatus.QUEUED


def test_worker_key_and_worker_keys_of_a_registered_worker(conn, queue):
    assert isinstance(rq.Worker.redis_worker_namespace_prefix, str)
    assert params(get_keys) == ["queue", "connection"]
    worker = make_worker(queue)
    worker.register_birth()
    try:
        assert worker.key == ri.worker_key(worker.name)
        assert conn.exists(ri.worker_key(worker.name))
        assert ri.worker_keys(queue) == {worker.key}
    finally:
        worker.register_death()
    assert ri.worker_keys(queue) == set()


# -- Registries ----------------------------------------------------------------------------------------------------


def age_started_entries(conn: redis.Redis) -> None:
    """Every entry of the started registry expired (its worker's heartbeats stopped)."""
    key = StartedJobRegistry(QUEUE, connection=conn).key
    conn.zadd(key, {member: 1 for member in conn.zrange(key, 0, -1)})


def test_started_count_counts_without_cleaning_up(conn, queue):
    assert params(StartedJobRegistry.get_job_count) == ["self", "cleanup"]
    enqueue(queue)
    worker = make_worker(queue)
    started(worker, dequeue(queue))
    assert ri.started_count(conn, QUEUE) == 1
    age_started_entries(conn)
    assert ri.started_count(conn, QUEUE) == 1  # expired, still counted: the reaper cleans it, not a scrape


def test_reap_abandoned_retries_a_job_with_retries_left_and_fails_the_others_as_lost(conn, queue):
    assert params(StartedJobRegistry.get_expired_job_ids) == ["self", "timestamp"]
    assert params(StartedJobRegistry.cleanup)[:2] == ["self", "timestamp"]
    worker = make_worker(queue)
    retried = enqueue(queue, retry=Retry(max=1))
    lost = enqueue(queue)
    for _ in range(2):
        started(worker, dequeue(queue))
    assert ri.reap_abandoned(conn, QUEUE) == []  # alive: nothing expired
    age_started_entries(conn)
    assert sorted(ri.reap_abandoned(conn, QUEUE)) == sorted([retried.id, lost.id])
    assert ri.started_count(conn, QUEUE) == 0
    retried.refresh()
    lost.refresh()
    assert retried.get_status() == JobStatus.QUEUED and ids(conn, ri.queue_key(queue)) == [retried.id]
    assert lost.get_status() == JobStatus.FAILED
    assert ri.lost_by_worker(lost.latest_result())
    assert not ri.lost_by_worker(retried.latest_result())
    assert not ri.lost_by_worker(None)


# -- Jobs ----------------------------------------------------------------------------------------------------------


def test_retries_left_is_what_retry_grants(queue):
    assert ri.retries_left(enqueue(queue, retry=Retry(max=2))) == 2
    assert ri.retries_left(enqueue(queue)) == 0


def test_a_job_requeued_for_free_goes_back_to_the_front_without_losing_an_attempt(conn, queue):
    job = enqueue(queue, "builtins.int", "not a number", retry=Retry(max=1))
    behind = enqueue(queue)
    assert dequeue(queue).id == job.id
    worker = make_worker(queue)
    ri.requeue_at_front_for_free(job)  # the worker is stopping: the job is about to raise
    worker.perform(job, queue, worker.start_execution(job))
    assert ids(conn, ri.queue_key(queue)) == [job.id, behind.id]
    job.refresh()
    assert job.get_status() == JobStatus.QUEUED
    assert ri.retries_left(job) == 1


# -- The worker: RQ's methods it overrides -------------------------------------------------------------------------


def test_get_heartbeat_ttl_is_what_a_started_jobs_registry_entry_lives(conn, queue):
    assert params(SimpleWorker.get_heartbeat_ttl) == ["self", "job", "working_time"]
    enqueue(queue, timeout=3600)
    worker = make_worker(queue)
    worker.heartbeat_ttl_s = 7
    job = dequeue(queue)
    before = time.time()
    started(worker, job)
    ((_, score),) = conn.zrange(StartedJobRegistry(QUEUE, connection=conn).key, 0, -1, withscores=True)
    assert before + 7 - 1 <= score <= time.time() + 7 + 1


def test_request_force_stop_is_the_second_signals_handler_and_on_force_stop_may_keep_the_worker(conn, queue, signals):
    assert params(SimpleWorker.request_stop) == ["self", "signum", "frame"]
    assert params(SimpleWorker.request_force_stop) == ["self", "signum", "frame"]
    worker = make_worker(queue, Recording)
    assert isinstance(worker, Recording)
    assert not worker.shutdown_requested() and not worker.stop_signal_repeated()
    with pytest.raises(StopRequested):  # idle: RQ stops at once
        worker.request_stop(signal.SIGTERM, None)
    assert worker.shutdown_requested() and worker.stop_signal_repeated()
    assert signal.getsignal(signal.SIGTERM) == worker.request_force_stop
    worker._shutdown_requested_date = now() - timedelta(seconds=2)
    assert not worker.stop_signal_repeated()
    worker.go_on = True
    worker.request_force_stop(signal.SIGTERM, None)  # kept running
    worker.go_on = False
    with pytest.raises(SystemExit):
        worker.request_force_stop(signal.SIGTERM, None)


def test_heartbeat_renews_the_worker_key_and_calls_on_heartbeat_idle_and_in_a_pipeline(conn, queue):
    assert params(SimpleWorker.heartbeat) == ["self", "timeout", "pipeline"]
    assert params(SimpleWorker.maintain_heartbeats) == ["self", "job", "execution"]
    enqueue(queue)
    worker = make_worker(queue, Recording, worker_ttl=40)
    assert isinstance(worker, Recording)
    worker.register_birth()
    worker.heartbeat()
    assert worker.beats == [(False, 100)] and 90 <= conn.ttl(worker.key) <= 100
    job = dequeue(queue)
    execution = started(worker, job)
    worker.beats.clear()
    worker.beat(job, execution)
    assert [on_pipeline for on_pipeline, _ in worker.beats] == [True]


def test_execute_job_is_what_the_work_loop_calls_with_each_job(conn, queue, signals):
    assert params(SimpleWorker.execute_job) == ["self", "job", "queue"]

    class Dequeued(HookedWorker):
        seen: ClassVar[list[tuple[str, str]]] = []

        def run_dequeued(self, job: RQJob, queue: Queue) -> None:
            self.seen.append((job.id, queue.name))
            super().run_dequeued(job, queue)

        def subscribe(self) -> None:
            """No pubsub thread: stopping it waits out its 60 s poll (a slow test, nothing else)."""

    job = enqueue(queue)
    make_worker(queue, Dequeued).work(burst=True)
    assert Dequeued.seen == [(job.id, QUEUE)]
    assert job.get_status(refresh=True) == JobStatus.FINISHED and job.latest_result().return_value == 2


# -- The worker: RQ's methods and attributes it calls --------------------------------------------------------------


def test_prepare_execution_registers_the_job_as_started_and_the_worker_busy(conn, queue):
    assert params(SimpleWorker.prepare_execution) == ["self", "job"]
    enqueue(queue)
    worker = make_worker(queue)
    job = dequeue(queue)
    execution = worker.start_execution(job)
    assert execution.job_id == job.id
    assert worker.is_busy()
    assert StartedJobRegistry(QUEUE, connection=conn).get_job_ids(cleanup=False) == [job.id]


def test_maintain_heartbeats_renews_the_job_and_its_registry_entry(conn, queue):
    enqueue(queue, timeout=3600)
    worker = make_worker(queue)
    worker.heartbeat_ttl_s = 5
    job = dequeue(queue)
    execution = started(worker, job)
    age_started_entries(conn)
    worker.beat(job, execution)
    ((_, score),) = conn.zrange(StartedJobRegistry(QUEUE, connection=conn).key, 0, -1, withscores=True)
    assert score > time.time()
    assert job.last_heartbeat is not None and now() - job.last_heartbeat < timedelta(seconds=5)


def test_perform_job_runs_and_finalises_a_job(conn, queue):
    assert params(SimpleWorker.perform_job) == ["self", "job", "queue", "execution"]
    enqueue(queue, "builtins.len", [1, 2, 3])
    worker = make_worker(queue)
    job = dequeue(queue)
    worker.perform(job, queue, worker.start_execution(job))
    assert job.get_status(refresh=True) == JobStatus.FINISHED and job.latest_result().return_value == 3
    assert ids(conn, ri.intermediate_queue_key(queue)) == []  # one queue: perform_job takes it out of that list


def test_prepare_job_execution_starts_a_claimed_job_and_takes_it_out_of_the_intermediate_list(conn, queue):
    assert params(SimpleWorker.prepare_job_execution) == ["self", "job", "remove_from_intermediate_queue"]
    enqueue(queue)
    worker = make_worker(queue)
    job = dequeue(queue)
    assert ids(conn, ri.intermediate_queue_key(queue)) == [job.id]
    started(worker, job)
    assert ids(conn, ri.intermediate_queue_key(queue)) == []
    assert job.get_status(refresh=True) == JobStatus.STARTED
    assert job.worker_name == worker.name and job.started_at is not None


def test_job_timeout_falls_back_to_the_queue_classes_default(queue):
    assert isinstance(Queue.DEFAULT_TIMEOUT, int)
    worker = make_worker(queue)
    assert worker.queue_class is Queue
    assert worker.job_timeout(enqueue(queue, timeout=5)) == 5
    untimed = RQJob.create("builtins.len", args=[[1]], connection=queue.connection, serializer=JSONSerializer)
    assert untimed.timeout is None
    assert worker.job_timeout(untimed) == Queue.DEFAULT_TIMEOUT


def test_death_penalty_class_raises_the_job_timeout_in_its_block(queue):
    worker = make_worker(queue)
    assert issubclass(worker.death_penalty_class, BaseDeathPenalty)
    inspect.signature(worker.death_penalty_class).bind(1, JobTimeoutException, job_id="some-job")  # as called
    started_at = time.monotonic()
    with pytest.raises(JobTimeoutException), worker.time_limit(1, "some-job"):
        time.sleep(5)
    assert time.monotonic() - started_at < 3
    with worker.time_limit(5, "some-job"):
        pass  # ended in time: nothing raised, and nothing later


def test_finalize_success_marks_a_batched_job_finished(conn, queue):
    assert params(SimpleWorker._finalize_success) == ["self", "job", "queue", "execution", "return_value"]
    enqueue(queue)
    worker = make_worker(queue)
    job = dequeue(queue)
    worker.finish_succeeded(job, queue, started(worker, job))
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert job.id in queue.finished_job_registry
    assert ri.started_count(conn, QUEUE) == 0


def test_finalize_failure_retries_a_job_with_retries_left_and_fails_the_others(conn, queue):
    assert params(SimpleWorker._finalize_failure) == ["self", "job", "queue", "execution", "exc_info"]
    retried = enqueue(queue, retry=Retry(max=1))
    failed = enqueue(queue)
    worker = make_worker(queue)
    executions = [started(worker, dequeue(queue)) for _ in range(2)]
    for job, execution in zip((retried, failed), executions, strict=True):
        try:
            raise ValueError("boom")
        except ValueError as exc:
            worker.finish_failed(job, queue, execution, exc)
    assert retried.get_status(refresh=True) == JobStatus.QUEUED and ids(conn, ri.queue_key(queue)) == [retried.id]
    assert failed.get_status(refresh=True) == JobStatus.FAILED and failed.id in queue.failed_job_registry
    assert "ValueError: boom" in (failed.latest_result().exc_string or "")
    assert ri.started_count(conn, QUEUE) == 0


def test_get_state_and_set_state_are_the_workers_busy_and_idle(conn, queue):
    assert params(SimpleWorker.set_state) == ["self", "state", "pipeline"]
    worker = make_worker(queue)
    worker.register_birth()
    enqueue(queue)
    worker.start_execution(dequeue(queue))
    assert worker.is_busy() and conn.hget(worker.key, "state") == b"busy"
    worker.set_idle()
    assert not worker.is_busy() and conn.hget(worker.key, "state") == b"idle"


# -- Administration: counts, retries, pauses (docs/operations/administration.md) ----------------------------------


def failed_job(queue: Queue) -> RQJob:
    """A job that raised on its one attempt: in the failed registry."""
    job = enqueue(queue, "builtins.int", "not a number")
    worker = make_worker(queue)
    worker.perform(dequeue(queue), queue, worker.start_execution(job))
    assert job.get_status(refresh=True) == JobStatus.FAILED
    return job


def test_registry_counts_count_each_registry_without_cleaning_up(conn, queue):
    assert params(rq.registry.BaseRegistry.get_job_count) == ["self", "cleanup"]
    failed_job(queue)
    enqueue(queue)
    started(make_worker(queue), dequeue(queue))
    age_started_entries(conn)
    counts = ri.registry_counts(conn, QUEUE)
    assert counts == {"started": 1, "failed": 1, "deferred": 0, "scheduled": 0}
    assert ri.started_count(conn, QUEUE) == 1  # still there: counting reaped nothing


def test_requeue_ended_puts_a_failed_job_back_at_the_end_of_its_queue_with_its_meta_and_no_expiry(conn, queue):
    assert params(rq.registry.FailedJobRegistry.requeue) == ["self", "job_or_id", "at_front"]
    job = failed_job(queue)
    waiting = enqueue(queue)
    conn.expire(job.key, 100)
    job.meta["note"] = "cleared by the caller"
    ri.requeue_ended(job)
    assert ids(conn, ri.queue_key(queue)) == [waiting.id, job.id]
    assert job.id not in queue.failed_job_registry
    job.refresh()
    assert job.get_status() == JobStatus.QUEUED and job.meta["note"] == "cleared by the caller"
    assert conn.ttl(job.key) == -1


def test_requeue_ended_puts_back_a_job_the_worker_ended_itself(conn, queue):
    assert params(Queue.enqueue_job)[:4] == ["self", "job", "pipeline", "at_front"]
    enqueue(queue)
    worker = make_worker(queue)
    job = dequeue(queue)
    worker.perform(job, queue, worker.start_execution(job))  # returned: RQ finished it (an outcome in its meta)
    assert job.id in queue.finished_job_registry
    ri.requeue_ended(job)
    assert job.id not in queue.finished_job_registry
    assert ids(conn, ri.queue_key(queue)) == [job.id]
    assert job.get_status(refresh=True) == JobStatus.QUEUED and job.started_at is None


def test_put_back_returns_a_dequeued_job_to_the_front_of_its_queue(conn, queue):
    first, second = enqueue(queue), enqueue(queue)
    job = dequeue(queue)
    assert ids(conn, ri.intermediate_queue_key(queue)) == [first.id]
    ri.put_back(job, queue)
    assert ids(conn, ri.queue_key(queue)) == [first.id, second.id]
    assert ids(conn, ri.intermediate_queue_key(queue)) == []
    assert job.get_status(refresh=True) == JobStatus.QUEUED


def test_dequeue_leaves_out_paused_queues_and_puts_back_a_job_of_a_queue_paused_meanwhile(conn, queue):
    assert params(SimpleWorker.dequeue_job_and_maintain_ttl) == ["self", "timeout", "max_idle_time"]
    assert isinstance(make_worker(queue)._ordered_queues, list)
    other = Queue(QUEUE + "-other", connection=conn, serializer=JSONSerializer)
    held, free = enqueue(queue), enqueue(other)
    worker = HookedWorker([queue, other], connection=conn, serializer=JSONSerializer)
    worker.register_birth()
    pause.pause(conn, QUEUE)
    taken = worker.dequeue_job_and_maintain_ttl(5)
    assert taken is not None and (taken[0].id, taken[1].name) == (free.id, other.name)
    assert ids(conn, ri.queue_key(queue)) == [held.id]
    started_at = time.monotonic()
    assert worker.dequeue_job_and_maintain_ttl(5, max_idle_time=3) is None  # the paused job is left alone
    assert time.monotonic() - started_at >= 2
    assert worker.dequeue_job_and_maintain_ttl(None) is None  # burst: nothing open to take
    pause.pause(conn, other.name)
    assert worker.dequeue_job_and_maintain_ttl(5, max_idle_time=2) is None  # all paused: it waits, heartbeats kept
    assert conn.ttl(worker.key) > 0
    pause.resume(conn, QUEUE)
    pause.resume(conn, other.name)

    class PausedMeanwhile(HookedWorker):
        calls = 0

        def paused_queues(self) -> set[str]:
            self.calls += 1
            return set() if self.calls == 1 else {QUEUE}  # paused between the check and the dequeue

    meanwhile = PausedMeanwhile([queue], connection=conn, serializer=JSONSerializer)
    assert meanwhile.dequeue_job_and_maintain_ttl(5, max_idle_time=3) is None
    assert ids(conn, ri.queue_key(queue)) == [held.id] and ids(conn, ri.intermediate_queue_key(queue)) == []
    assert held.get_status(refresh=True) == JobStatus.QUEUED
    assert worker.dequeue_job_and_maintain_ttl(5)[0].id == held.id  # resumed: taken at once
