"""The exceptions that end a job early; the tree is in the package docstring."""


class WorkerError(Exception):
    pass


class JobCanceled(WorkerError):
    pass


class InputError(WorkerError):
    """A message the caller can act on: what was wrong with the input."""
