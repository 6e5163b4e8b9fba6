"""The RQ queues' names (docs/architecture.md, "Queues"; docs/operations/scaling.md, "Priorities").

A pool is the set of workers that can run a family of models; each pool has one RQ queue per priority. The normal
queue keeps the pool's bare name (what every queue was called before priorities), "high" and "low" add a suffix.
A worker of a pool listens on the pool's three queues in priority order, so RQ takes high before normal before low.
"""

from typing import Literal

MNIST_QUEUE = "mnist"  # the in-house models, shipped and trained
IF_QUEUE = "deepfloyd"  # DeepFloyd IF
TRAIN_QUEUE = "train"  # training jobs
QUEUES = (MNIST_QUEUE, IF_QUEUE, TRAIN_QUEUE)  # the pools

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")  # the order a worker takes them in


def queue_name(pool: str, priority: Priority = "normal") -> str:
    """The RQ queue of `pool` at `priority`: "mnist-high", "mnist", "mnist-low"."""
    return pool if priority == "normal" else f"{pool}-{priority}"


def pool_queues(pool: str) -> list[str]:
    """A pool's queues in the order its workers take jobs from them."""
    return [queue_name(pool, p) for p in PRIORITIES]


def all_queues(pools: tuple[str, ...] | list[str] = QUEUES) -> list[str]:
    """Every queue of `pools`, each pool's in priority order."""
    return [name for pool in pools for name in pool_queues(pool)]


def split(name: str) -> tuple[str, Priority]:
    """The pool and priority of a queue name (the inverse of `queue_name`)."""
    for priority in ("high", "low"):
        if name.endswith(f"-{priority}"):
            return name.removesuffix(f"-{priority}"), priority
    return name, "normal"
