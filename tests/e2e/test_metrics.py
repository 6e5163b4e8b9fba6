"""`GET /metrics`: what real workers and the API recorded in Redis, scraped over HTTP in Prometheus text format."""

import signal

import httpx
import numpy as np
import pytest
import redis
import torch
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_job_lifecycle import long_job
from tests.helpers import (
    NOISE,
    SLOW_SAMPLE,
    TEST_KEYS,
    client_for,
    finish,
    png,
    running_stack,
    stop,
    submit,
    wait_until,
)

SAMPLE = {"kind": "sample", "model": "mnist-ddpm", "prompt": "3", "n": 2, "seed": 1, "steps": 4}


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics (no key needed), by name and sorted labels."""
    response = httpx.get(url + "/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def queued_behind_with_its_upload_gone(c: httpx.Client, redis_url: str) -> dict:
    """A noise job that fails in the worker, on its input: its upload is deleted while the job waits."""
    upload = c.post("/v1/uploads", content=png(np.zeros((28, 28), np.uint8)), headers={"Content-Type": "image/png"})
    job = c.post("/v1/jobs", json={**NOISE, "image": {"upload_id": upload.json()["id"]}}).json()
    assert job["status"] == "queued", job
    conn = redis.Redis.from_url(redis_url)
    assert conn.delete(*conn.keys(f"*{upload.json()['id']}*")) >= 1
    return job


def test_jobs_images_durations_queues_and_workers_are_counted(redis_url, tmp_path):
    with running_stack(redis_url, tmp_path, workers=1) as stack, client_for(stack, TEST_KEYS[-60]) as c:
        before = scrape(stack.url)
        assert value(before, "diffusion_jobs_workers", queue="mnist") == 1
        assert value(before, "diffusion_jobs_workers", queue="train") == 0

        done = submit(c, SAMPLE).json()
        assert finish(c, done["id"], 120)["status"] == "succeeded"
        slow = c.post("/v1/jobs", json=SLOW_SAMPLE).json()
        wait_until(lambda: c.get(f"/v1/jobs/{slow['id']}").json()["status"] == "running", 60, "the slow job to run")
        doomed = queued_behind_with_its_upload_gone(c, stack.env["REDIS_URL"])
        assert c.delete(f"/v1/jobs/{slow['id']}").status_code == 202
        assert finish(c, slow["id"], 60)["status"] == "canceled"
        failed = finish(c, doomed["id"], 60)
        assert failed["status"] == "failed" and failed["error"]["type"] == "invalid_input", failed

        after = scrape(stack.url)
        assert value(after, "diffusion_jobs_jobs_total", kind="sample", status="succeeded") == 1
        assert value(after, "diffusion_jobs_jobs_total", kind="noise", status="failed") == 1
        assert value(after, "diffusion_jobs_jobs_total", kind="sample", status="canceled") == 1
        assert value(after, "diffusion_jobs_images_total", kind="sample", model="mnist-ddpm") == 2
        labels = {"kind": "sample", "model": "mnist-ddpm"}
        assert value(after, "diffusion_jobs_job_duration_seconds_count", **labels) == 2  # the succeeded and canceled
        assert value(after, "diffusion_jobs_job_duration_seconds_bucket", **labels, le="+Inf") == 2
        assert value(after, "diffusion_jobs_job_duration_seconds_sum", **labels) > 0
        assert value(after, "diffusion_jobs_queue_depth", queue="mnist") == 0

        stop(stack.workers[0])
        wait_until(lambda: value(scrape(stack.url), "diffusion_jobs_workers", queue="mnist") == 0, 20, "no worker")
        queued = [c.post("/v1/jobs", json={**NOISE, "seed": i}).json() for i in range(3)]
        assert value(scrape(stack.url), "diffusion_jobs_queue_depth", queue="mnist") == 3
        assert c.delete(f"/v1/jobs/{queued[0]['id']}").json()["status"] == "canceled"
        last = scrape(stack.url)
        assert value(last, "diffusion_jobs_queue_depth", queue="mnist") == 2
        assert value(last, "diffusion_jobs_jobs_total", kind="noise", status="canceled") == 1
        assert value(last, "diffusion_jobs_jobs_running", queue="mnist") == 0


def test_metrics_need_no_key_and_are_not_in_a_job_route(stack):
    response = httpx.get(stack.url + "/metrics")
    assert response.status_code == 200
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"diffusion_jobs_jobs", "diffusion_jobs_queue_depth", "diffusion_jobs_workers"} <= names


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_worker_reports_its_gpu_memory(stack, client):
    assert submit(client, SAMPLE).json()["status"] == "succeeded"
    samples = scrape(stack.url)
    gpu = {
        dict(labels)["kind"]: v for (name, labels), v in samples.items() if name == "diffusion_jobs_gpu_memory_bytes"
    }
    assert gpu["peak"] > 0 and gpu["peak"] >= gpu["allocated"] > 0, gpu


def test_a_job_failed_as_worker_lost_is_counted_by_the_reaper(redis_url, tmp_path):
    with (
        running_stack(redis_url, tmp_path, workers=1, JOB_RETRIES="0") as stack,
        client_for(stack, TEST_KEYS[-62]) as c,
    ):
        job = long_job(c, levels=12)
        wait_until(lambda: c.get(f"/v1/jobs/{job['id']}").json()["status"] == "running", 60, "the job to start")
        stop(stack.workers[0], signal.SIGKILL)
        lost = finish(c, job["id"], 60)
        assert lost["status"] == "failed" and lost["error"]["type"] == "worker_lost", lost
        samples = scrape(stack.url)
        assert value(samples, "diffusion_jobs_jobs_total", kind="noise", status="failed") == 1
        assert value(samples, "diffusion_jobs_job_duration_seconds_count", kind="noise", model="mnist-ddpm") == 1
        assert value(samples, "diffusion_jobs_jobs_running", queue="mnist") == 0
