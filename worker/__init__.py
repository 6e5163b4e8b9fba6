"""The GPU workers: RQ worker processes that turn validated jobs into calls of `models/`.

Errors a job can end with (module `worker.errors`):

    WorkerError
    ├── JobCanceled     the caller canceled; the job stops at its next step and keeps what it made
    ├── InputError      the input cannot be used; the job fails at once, without a retry
    ├── ModelUnreadable a trained model's checkpoint does not load; retried (from the store) like any other error
    ├── ModelUnavailable a shipped model (DeepFloyd IF) does not load here; the job fails at once, the model is
    │                   shown unavailable with the reason
    └── WorkerStopping  a second SIGTERM: the job stops at its next step and is queued again for another worker
"""
