"""A job's spans in the worker (docs/operations/observability.md, "Tracing"): the job's own ("job {kind}"), a child
of the enqueue span its request's trace carried in the job's meta; under it one span per sampling stage, with a "step"
event per step (at most `MAX_STEP_EVENTS` per stage), and one per artifact written. The model load is a child of the
current span (worker/model_cache.py).

Jobs run as one batch (worker/batching.py) each have their own span in their own trace, linked to the first job's,
which alone holds the batch's model load. With tracing off, `traced` opens nothing and `trace_of` answers `NO_TRACE`,
whose methods do nothing.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes
from rq.job import Job as RQJob

from core.tracing import enabled, extract, tracer

MAX_STEP_EVENTS = 100  # per stage: within the SDK's default of 128 events per span


class JobTrace:
    """The trace of a job that is not traced: every method does nothing."""

    def step(self, stage: str, step: int, total: int) -> None:
        """Step `step` of `total` of `stage`: an event of the stage's span, which starts with a new stage and ends at
        its last step."""

    @contextmanager
    def span(self, name: str, attributes: Attributes = None) -> Iterator[None]:
        """A span under the job's own for what the block does."""
        yield

    def end(self) -> None:
        """Ends the job's spans, with the outcome the job recorded in its meta."""


NO_TRACE = JobTrace()


class SpannedJob(JobTrace):
    def __init__(self, job: RQJob, links: Sequence[Link] = ()) -> None:
        self.job = job
        params = job.args[0] if job.args and isinstance(job.args[0], dict) else {}
        kind = str(params.get("kind", "unknown"))
        attributes: Attributes = {
            "job.id": job.id,
            "job.kind": kind,
            "job.model": str(params.get("model", "")),
            "job.attempt": int(job.meta.get("attempts", 0)) + 1,
            "messaging.system": "rq",
            "messaging.destination.name": job.origin,
        }
        context = extract(job.meta.get("trace"))
        self.job_span = tracer.start_span(f"job {kind}", context, SpanKind.CONSUMER, attributes, links)
        self.context = trace.set_span_in_context(self.job_span)
        self._stage: Span | None = None
        self._stage_name = ""
        self._last_step = 0
        self._every = 1

    def step(self, stage: str, step: int, total: int) -> None:
        if self._stage is None or stage != self._stage_name or step < self._last_step:
            self._end_stage()
            attributes: Attributes = {"stage": stage, "stage.total_steps": total}
            self._stage = tracer.start_span(f"stage {stage}", self.context, attributes=attributes)
            self._stage_name, self._every = stage, max(1, -(-total // MAX_STEP_EVENTS))
        self._last_step = step
        if step % self._every == 0 or step >= total:
            self._stage.add_event("step", {"step": step, "total": total})
        if step >= total:
            self._end_stage()

    @contextmanager
    def span(self, name: str, attributes: Attributes = None) -> Iterator[None]:
        with tracer.start_as_current_span(name, self.context, attributes=attributes):
            yield

    def _end_stage(self) -> None:
        if self._stage is not None:
            self._stage.end()
            self._stage = None

    def end(self) -> None:
        self._end_stage()
        outcome = self.job.meta.get("outcome")
        error = self.job.meta.get("error")
        self.job_span.set_attribute("job.outcome", str(outcome or "not ended"))  # not ended: RQ retries it, or stopped
        if error:
            self.job_span.set_status(Status(StatusCode.ERROR, f"{error.get('type')}: {error.get('message')}"))
        self.job_span.end()


_open: dict[str, JobTrace] = {}


def trace_of(job: RQJob) -> JobTrace:
    """The job's trace while its worker runs it (inside `traced`); `NO_TRACE` outside, or with tracing off."""
    return _open.get(job.id, NO_TRACE)


@contextmanager
def traced(job: RQJob) -> Iterator[None]:
    """The job's span, current for the block: what the worker does for the job (a batch it leads included)."""
    if not enabled():
        yield
        return
    spanned = _open[job.id] = SpannedJob(job)
    try:
        with trace.use_span(spanned.job_span, end_on_exit=False, record_exception=True, set_status_on_exception=True):
            yield
    finally:
        del _open[job.id]
        spanned.end()


@contextmanager
def traced_along(lead: RQJob, batch: Sequence[RQJob]) -> Iterator[None]:
    """Spans of the jobs run in one loop with `lead`, each in its own trace, linked to the lead's span."""
    lead_trace = _open.get(lead.id)
    if not batch or not isinstance(lead_trace, SpannedJob):
        yield
        return
    links = [Link(lead_trace.job_span.get_span_context(), {"batch.lead": lead.id})]
    spanned = {job.id: SpannedJob(job, links) for job in batch}
    _open.update(spanned)
    try:
        yield
    finally:
        for job_id, one in spanned.items():
            del _open[job_id]
            one.end()
