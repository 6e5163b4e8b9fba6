"""Every Redis key and channel of diffusion-jobs outside RQ's own, in one place."""

EVENTS_CHANNEL = "dj:events"  # messages are job ids: "look at this job again"
REAPER_LOCK = "dj:reaper"
RATE_PREFIX = "dj:rate"  # the `limits` library's per-key counters live under this prefix
WEBHOOK_OUTBOX = "dj:webhooks:outbox"  # list of new delivery records (JSON), oldest at the right (service/webhooks.py)
WEBHOOK_PENDING = "dj:webhooks:pending"  # zset of records being tried or waiting for a retry, scored by due time
# Metrics (service/metrics.py): hashes whose fields pack the labels, tab-separated.
METRICS_JOBS = "dj:metrics:jobs"  # "kind\tstatus" -> jobs ended
METRICS_DURATION = "dj:metrics:duration"  # "kind\tmodel\t<bucket bound>|sum" -> jobs in that bucket | seconds
METRICS_IMAGES = "dj:metrics:images"  # "kind\tmodel" -> images produced
METRICS_RUNS = (
    "dj:metrics:runs"  # "kind\tmodel" -> jobs that ran and ended (the duration histogram's count, in one field)
)
METRICS_GPU = "dj:metrics:gpu"  # "worker\tallocated|peak" -> bytes at the worker's last job end
PAUSED_QUEUES = "dj:paused-queues"  # set of queue names whose workers take no new job (core/pause.py)


def worker_info(worker_name: str) -> str:
    """A worker's hash of what it runs on (worker/worker_info.py): GPU, CUDA_VISIBLE_DEVICES; renewed with its
    heartbeat, so it expires with the worker."""
    return f"dj:worker-info:{worker_name}"


def owner_jobs(owner: str) -> str:
    return f"dj:jobs:{owner}"  # zset of job ids, scored by creation time


def idempotency(owner: str, digest: str) -> str:
    return f"dj:idem:{owner}:{digest}"


def group_idempotency(owner: str, digest: str) -> str:
    return f"dj:idem-group:{owner}:{digest}"  # a group's Idempotency-Key: its own space, apart from the jobs' keys


def preview(job_id: str) -> str:
    return f"dj:preview:{job_id}"  # hash: the running job's latest preview (worker/preview.py): stage, step, total, png


def event_ids(job_id: str) -> str:
    return f"dj:event-ids:{job_id}"  # hash: the ids of the job's events stream (service/job_stream.py)


def cancel_flag(job_id: str) -> str:
    return f"dj:cancel:{job_id}"


def upload(upload_id: str) -> str:
    return f"dj:upload:{upload_id}"


def artifact(job_id: str, name: str) -> str:
    """A job's artifact in the artifact store (not a Redis key of its own)."""
    return f"jobs/{job_id}/{name}"


def upload_blob(upload_id: str) -> str:
    return f"uploads/{upload_id}"


def owner_models(owner: str) -> str:
    return f"dj:models:{owner}"  # hash: model id -> the trained model's record (JSON)


def model_claims(owner: str) -> str:
    return f"dj:model-claims:{owner}"  # hash: model name -> the id of the train job making it


def model_checkpoint(owner: str, model_id: str, version: str) -> str:
    """A trained model's checkpoint folder in the artifact store (kept until the model is deleted)."""
    return f"models/{owner}/{model_id}/{version}"


def train_state(job_id: str) -> str:
    """A train job's resumable state after its last epoch, in the artifact store."""
    return f"train/{job_id}/state.pt"


def train_pairs(job_id: str) -> str:
    """A reflow distillation's pairs (the teacher's images), in the artifact store: a retry does not draw them again."""
    return f"train/{job_id}/pairs.pt"


def model_status(model_id: str) -> str:
    """A shipped model as the last worker to load it found it (JSON), or why it could not (core/model_status.py)."""
    return f"dj:model-status:{model_id}"


def prompt_embedding(encoder: str, digest: str) -> str:
    """A prompt's text embedding (safetensors bytes), keyed by the encoder and the prompt's SHA-256."""
    return f"dj:prompt:{encoder}:{digest}"


def active_jobs(owner: str) -> str:
    return f"dj:active:{owner}"  # set: the key's jobs queued or running (core/usage.py)


def usage_day(owner: str, day: str) -> str:
    return f"dj:usage:{owner}:{day}"  # hash: images, gpu_seconds of the key on one UTC day (YYYY-MM-DD)


def group(group_id: str) -> str:
    return f"dj:group:{group_id}"  # hash: a job group's record (core/groups.py)


def group_ended(group_id: str) -> str:
    return f"dj:group-ended:{group_id}"  # set: the group's members whose end was counted (core/groups.py)
