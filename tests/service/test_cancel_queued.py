"""DELETE of a job that reads as queued (service/jobs.py, `JobRepo.cancel`), on a real Redis: the API ends it only
when it takes it out of its queue itself; one that a worker dequeued a moment ago is the worker's to end, so the two
endings never race (the API's would overwrite the worker's meta and RQ would record the job as finished)."""

import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer

from core import keys
from core.job_state import status_and_error
from core.kinds import parse_job
from core.settings import Settings
from service.jobs import JobRepo
from tests.helpers import NOISE, fresh_database

OWNER = "cancel-test"


@pytest.fixture
def repo(redis_url):
    with redis.Redis.from_url(fresh_database(redis_url)) as conn:
        yield JobRepo(conn, Settings())


def test_a_job_still_in_its_queue_is_canceled_at_once_and_leaves_the_queue(repo):
    job, _ = repo.create(OWNER, parse_job(NOISE), "mnist", None, "c1")
    canceled = repo.cancel(OWNER, job.id)
    assert status_and_error(canceled)[0] == "canceled"
    assert repo.conn.llen("rq:queue:mnist") == 0
    assert repo.conn.exists(keys.cancel_flag(job.id))


def test_a_job_a_worker_dequeued_is_left_to_the_worker_with_the_flag_set(repo):
    job, _ = repo.create(OWNER, parse_job(NOISE), "mnist", None, "c2")
    queue = Queue("mnist", connection=repo.conn, serializer=JSONSerializer)
    dequeued, _ = Queue.dequeue_any([queue], timeout=None, connection=repo.conn, serializer=JSONSerializer)
    assert dequeued is not None and dequeued.id == job.id  # RQ moved it to the intermediate list; still "queued"
    answer = repo.cancel(OWNER, job.id)
    assert status_and_error(answer)[0] == "queued"  # not ended here: the worker ends it at its first check
    assert repo.conn.exists(keys.cancel_flag(job.id))
    assert not repo.conn.exists(keys.METRICS_JOBS)  # nothing counted as ended by the API
    assert repo.cancel(OWNER, job.id).id == job.id  # idempotent
