"""Load: 2,000 jobs from 50 concurrent clients against the embedded stack (`diffusion-jobs up`: its own Redis, the
API, a worker). Every accepted job ends, none is lost, none runs twice to completion. The load generator is
bench/queue.py's (raw keep-alive connections, so the client costs the two cores little)."""

import asyncio
import re
from collections import Counter

import pytest

from bench.queue import drain, percentile, start_stack, stop_stack, submit_burst, wait_ready


@pytest.mark.slow
def test_2000_jobs_from_50_clients_all_end_once(tmp_path, measured):
    stack = start_stack(tmp_path)
    try:
        wait_ready(stack)
        submitted = asyncio.run(submit_burst(stack.base_url, clients=50, burst=2000))
        drained = asyncio.run(drain(stack.base_url, submitted.accepted_ids, timeout_s=240))
    finally:
        stop_stack(stack)
    assert len(submitted.accepted_ids) == 2000, submitted.refused
    assert len(set(submitted.accepted_ids)) == 2000
    assert drained.not_found == 0 and drained.not_terminal == 0
    assert drained.statuses == Counter({"succeeded": 2000})
    completions = Counter(re.findall(r"job=(\S+) succeeded", stack.log_path.read_text()))
    assert set(completions) == set(submitted.accepted_ids)
    assert max(completions.values()) == 1  # none ran twice to completion
    measured(
        jobs=2000,
        clients=50,
        post_p50_ms=round(percentile(submitted.post_ms, 50), 1),
        post_p99_ms=round(percentile(submitted.post_ms, 99), 1),
        submissions_per_s=round(2000 / submitted.wall_s),
        drain_s=round(drained.wall_s, 1),
    )
