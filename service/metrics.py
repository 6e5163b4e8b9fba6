"""Prometheus metrics, read from Redis at scrape time: any API process answers for the whole deployment.

Workers (and the API, for what it ends itself) write counters into a few Redis hashes, one pipelined round trip per
job end (`count_end`); `RedisCollector` turns them into metric families when `/metrics` is scraped:

- `diffusion_jobs_jobs_total{kind,status}`: jobs ended (succeeded, failed, canceled), from the counters.
- `diffusion_jobs_job_duration_seconds{kind,model}`: a histogram of the time from a job's start to its end.
- `diffusion_jobs_images_total{kind,model}`: images (`image_{i}.png`) jobs produced, kept ones of canceled jobs too.
- `diffusion_jobs_queue_depth{queue}`: jobs waiting (LLEN of the RQ queue).
- `diffusion_jobs_jobs_running{queue}`: jobs a worker holds (RQ's started-job registry).
- `diffusion_jobs_workers{queue}`: workers alive (RQ's worker registry).
- `diffusion_jobs_gpu_memory_bytes{worker,kind}`: per live worker on CUDA, memory `allocated` now and the `peak` of
  its last job, as of that job's end.
"""

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from rq import Queue
from rq.serializers import JSONSerializer

from core import keys
from core.job_metrics import BUCKETS, SEP
from core.rq_internals import queue_key, started_count, worker_key, worker_keys


def _fields(conn: redis.Redis, key: str) -> Iterator[tuple[list[str], float]]:
    raw: dict[bytes, bytes] = conn.hgetall(key)  # type: ignore[assignment]
    for field, value in raw.items():
        yield field.decode().split(SEP), float(value)


class RedisCollector(Collector):
    def __init__(self, conn: redis.Redis, queues: Iterable[str]) -> None:
        self.conn = conn
        self.queues = sorted(queues)

    def collect(self) -> Iterator[Metric]:
        yield from self._jobs()
        yield self._durations()
        yield from self._queues()
        yield self._gpu()

    def _jobs(self) -> Iterator[Metric]:
        jobs = CounterMetricFamily("diffusion_jobs_jobs", "Jobs ended, by kind and status.", labels=["kind", "status"])
        for labels, value in _fields(self.conn, keys.METRICS_JOBS):
            jobs.add_metric(labels, value)
        yield jobs
        images = CounterMetricFamily(
            "diffusion_jobs_images", "Images jobs produced, by kind and model.", labels=["kind", "model"]
        )
        for labels, value in _fields(self.conn, keys.METRICS_IMAGES):
            images.add_metric(labels, value)
        yield images

    def _durations(self) -> Metric:
        family = HistogramMetricFamily(
            "diffusion_jobs_job_duration_seconds", "Time from a job's start to its end.", labels=["kind", "model"]
        )
        counts: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
        for (kind, model, field), value in _fields(self.conn, keys.METRICS_DURATION):
            counts[(kind, model)][field] = value
        for labels, fields in sorted(counts.items()):
            running = 0.0
            buckets = []
            for bound in BUCKETS:
                name = "inf" if math.isinf(bound) else repr(bound)
                running += fields.get(name, 0.0)
                buckets.append(("+Inf" if math.isinf(bound) else name, running))
            family.add_metric(list(labels), buckets, fields.get("sum", 0.0))
        return family

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("diffusion_jobs_queue_depth", "Jobs waiting in each queue.", labels=["queue"])
        running = GaugeMetricFamily("diffusion_jobs_jobs_running", "Jobs a worker holds, per queue.", labels=["queue"])
        workers = GaugeMetricFamily("diffusion_jobs_workers", "Workers alive, per queue.", labels=["queue"])
        for name in self.queues:
            queue = Queue(name, connection=self.conn, serializer=JSONSerializer)
            depth.add_metric([name], self.conn.llen(queue_key(queue)))
            running.add_metric([name], started_count(self.conn, name))  # the reaper cleans it, not a scrape
            workers.add_metric([name], len(_alive(self.conn, worker_keys(queue))))
        yield from (depth, running, workers)

    def _gpu(self) -> Metric:
        family = GaugeMetricFamily(
            "diffusion_jobs_gpu_memory_bytes",
            "GPU memory of each live CUDA worker: allocated now and the peak of its last job, at that job's end.",
            labels=["worker", "kind"],
        )
        rows = list(_fields(self.conn, keys.METRICS_GPU))
        live = _alive(self.conn, {worker_key(worker) for (worker, _), _ in rows})
        for (worker, kind), value in rows:
            if worker_key(worker) in live:
                family.add_metric([worker, kind], value)
        return family


def _alive(conn: redis.Redis, worker_keys: Iterable[str]) -> set[str]:
    """The worker keys that still exist: a worker killed without its clean-up stays registered until RQ's
    maintenance, but its key expires within `WORKER_TTL_S`."""
    ordered = sorted(worker_keys)
    with conn.pipeline(transaction=False) as pipe:
        for key in ordered:
            pipe.exists(key)
        found = pipe.execute()
    return {key for key, exists in zip(ordered, found, strict=True) if exists}


def render(conn: redis.Redis, queues: Iterable[str]) -> bytes:
    """The Prometheus text exposition of the deployment's metrics, as Redis holds them now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(conn, queues))
    return generate_latest(registry)
