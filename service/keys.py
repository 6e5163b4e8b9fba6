"""Every Redis key and channel of diffusion-jobs outside RQ's own, in one place."""

EVENTS_CHANNEL = "dj:events"  # messages are job ids: "look at this job again"
REAPER_LOCK = "dj:reaper"


def owner_jobs(owner: str) -> str:
    return f"dj:jobs:{owner}"  # zset of job ids, scored by creation time


def idempotency(owner: str, digest: str) -> str:
    return f"dj:idem:{owner}:{digest}"


def cancel_flag(job_id: str) -> str:
    return f"dj:cancel:{job_id}"


def upload(upload_id: str) -> str:
    return f"dj:upload:{upload_id}"


def artifact(job_id: str, name: str) -> str:
    """A job's artifact in the artifact store (not a Redis key of its own)."""
    return f"jobs/{job_id}/{name}"


def upload_blob(upload_id: str) -> str:
    return f"uploads/{upload_id}"
