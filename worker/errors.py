"""The exceptions that end a job early; the tree is in the package docstring."""


class WorkerError(Exception):
    pass


class JobCanceled(WorkerError):
    pass


class JobTimedOut(WorkerError):
    """The job ran past its `timeout_s` (meta "timeout_s"): it ends as timed_out, its outputs unserved."""


class InputError(WorkerError):
    """A message the caller can act on: what was wrong with the input."""


class WorkerStopping(WorkerError):
    """The worker was told twice to stop: the job goes back to the front of its queue, its retry not spent."""


class ModelUnreadable(WorkerError):
    """A trained model's checkpoint does not load (a bad copy): retried from the store's copy, a bounded number of
    times, then the job fails with this message."""


class ModelUnavailable(WorkerError):
    """A shipped model's files are configured but do not load here (DeepFloyd IF): the job fails at once, and the
    model is shown unavailable with the reason until a worker loads it."""
