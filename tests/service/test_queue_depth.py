"""The queue's depth limit, checked in the enqueue's own transaction (service/jobs.py), on a real Redis."""

import pytest
import redis

from core.errors import Unavailable
from core.kinds import parse_job
from core.settings import Settings
from service.jobs import Entry, JobRepo
from tests.helpers import NOISE, fresh_database

OWNER = "depth-test"


@pytest.fixture
def conn(redis_url):
    with redis.Redis.from_url(fresh_database(redis_url)) as c:
        yield c


def test_past_the_limit_the_job_is_taken_back_and_nothing_is_left(conn):
    repo = JobRepo(conn, Settings(max_queue_depth=2))
    places = [repo.create(OWNER, parse_job(NOISE), "mnist", None, f"d{i}")[0].meta["place_hint"] for i in (1, 2)]
    assert places == [(1, None), (2, None)]  # positions; no ETA before a job of the kind has run
    with pytest.raises(Unavailable, match="queue is full"):
        repo.create(OWNER, parse_job(NOISE), "mnist", None, "d3")
    assert conn.llen("rq:queue:mnist") == 2
    assert conn.zcard(f"dj:jobs:{OWNER}") == 2
    assert len(conn.keys("rq:job:*")) == 2
    assert conn.scard(f"dj:active:{OWNER}") == 2  # the refused job's use was taken back with it


def test_a_group_past_the_limit_is_taken_back_whole(conn):
    repo = JobRepo(conn, Settings(max_queue_depth=3))
    repo.create(OWNER, parse_job(NOISE), "mnist", None, "d1")
    with pytest.raises(Unavailable, match="queue is full"):
        repo.enqueue(OWNER, [Entry(parse_job(NOISE), "mnist") for _ in range(3)])
    assert conn.llen("rq:queue:mnist") == 1 and len(conn.keys("rq:job:*")) == 1
    assert conn.scard(f"dj:active:{OWNER}") == 1


def test_a_job_a_worker_already_took_is_not_taken_back(conn):
    repo = JobRepo(conn, Settings(max_queue_depth=10))
    job, _ = repo.create(OWNER, parse_job(NOISE), "mnist", None, "d1")
    assert conn.lpop("rq:queue:mnist").decode() == job.id  # a worker dequeued it between the push and the check
    other, _ = repo.create(OWNER, parse_job(NOISE), "mnist", None, "d2")
    assert repo._take_back(OWNER, [job, other], 2, "2026-01-01") is False
    assert conn.exists(f"rq:job:{job.id}") and conn.zscore(f"dj:jobs:{OWNER}", job.id) is not None
    assert conn.lrange("rq:queue:mnist", 0, -1) == [other.id.encode()]  # the one still queued stays, in its place
