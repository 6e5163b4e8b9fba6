"""Log lines of the API and the workers: one JSON object per event (`LOG_FORMAT=json`, the default; formatted by
`python-json-logger`) or a line of text for a person at a terminal (`text`).

Every line logged while a job runs (worker) or while a request about a job is served (API: the id in the path)
carries `job_id`, from a context variable that a `logging.Filter` copies onto each record. Jobs run as one batch
log the first job's id as `job_id` and all of them as `batch_job_ids`.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from logging import Filter, LogRecord
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS

LogFormat = Literal["json", "text"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_job_ids: ContextVar[tuple[str, ...]] = ContextVar("job_ids", default=())


@contextmanager
def job_logging(*job_ids: str) -> Iterator[None]:
    """Lines logged inside the block carry the job's id (the first one's, for a batch)."""
    token = _job_ids.set(job_ids)
    try:
        yield
    finally:
        _job_ids.reset(token)


class JobIdFilter(Filter):
    def filter(self, record: LogRecord) -> bool:
        ids = _job_ids.get()
        if ids:
            record.job_id = ids[0]
            if len(ids) > 1:
                record.batch_job_ids = list(ids)
        return True


def log_config(log_format: LogFormat, level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the root logger; uvicorn's loggers propagate to it (uvicorn applies it in
    each of its worker processes too)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"job_id": {"()": "core.logs.JobIdFilter"}},
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(levelname)s %(name)s %(message)s",
                "rename_fields": {"levelname": "level", "name": "logger"},
                "timestamp": "time",  # RFC 3339, UTC
                "reserved_attrs": [*RESERVED_ATTRS, "color_message"],  # uvicorn's copy with terminal colours
            },
            "text": {"format": TEXT_FORMAT},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "filters": ["job_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
