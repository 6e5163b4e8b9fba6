"""What the running job's code needs of the worker that runs it: its heartbeat, and whether the worker is stopping."""

import threading
from collections.abc import Callable
from contextvars import ContextVar

# Set by the worker around each job: refreshes the worker's, the execution's and the job's heartbeats.
heartbeat: ContextVar[Callable[[], None]] = ContextVar("heartbeat", default=lambda: None)

# Set by a second SIGTERM while a job runs: the job stops at its next step and goes back to the queue.
stopping = threading.Event()
