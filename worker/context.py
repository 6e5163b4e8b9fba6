"""What the running job's code needs of the worker that runs it: a way to keep its heartbeat alive."""

from collections.abc import Callable
from contextvars import ContextVar

# Set by the worker around each job: refreshes the worker's, the execution's and the job's heartbeats.
heartbeat: ContextVar[Callable[[], None]] = ContextVar("heartbeat", default=lambda: None)
