"""The client commands of `diffusion-jobs`: `submit`, `jobs`, `cancel`, `models`, `group`, on `diffusion_jobs.client`.

`submit KIND` has one option per parameter of the kind's job schema (`core.schemas.jobs`), generated from it, so
a new parameter is an option without a change here. `submit --many FILE` posts a JSONL file's jobs as one group
(docs/api.md, "Groups"). Exit status: 0 done, 1 the job (a job of the group) failed or was canceled, 2 the API
refused the request (its message names the field) or could not be reached, 130 Ctrl-C (the jobs go on).
"""

import argparse
import json
import logging
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import httpx
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from tqdm import tqdm

from core.kinds import registered
from core.kinds.base import JobBase
from core.schemas.images import ImageInput
from core.schemas.responses import TERMINAL, Group, Job, Status
from diffusion_jobs.client import Client, ended
from diffusion_jobs.client_errors import ApiError

IMAGE_HELP = "a file (uploaded first), dataset:NAME:INDEX, job:ID:ARTIFACT or upload:ID"
Convert = Callable[[str], Any]


def image_input(text: str) -> dict[str, Any] | Path:
    """An image input of docs/api.md from one word; a Path is a file to upload before the job is posted."""
    source, _, rest = text.partition(":")
    if source == "dataset" and rest.count(":") >= 1:
        name, _, index = rest.rpartition(":")
        if not index.isdigit():
            raise argparse.ArgumentTypeError(f"dataset:NAME:INDEX needs an integer index, got {index!r}")
        return {"dataset": name, "index": int(index)}
    if source == "job" and rest.count(":") == 1:
        job_id, artifact = rest.split(":")
        return {"job_id": job_id, "artifact": artifact}
    if source == "upload" and rest:
        return {"upload_id": rest}
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no file {text!r}; give {IMAGE_HELP}")
    return path


def json_or(convert: Convert) -> Convert:
    """A list item: one value, or a JSON list of them (flattened after parsing)."""

    def parse(text: str) -> Any:
        if text.lstrip().startswith("["):
            try:
                return [convert(str(v)) if convert is not str else v for v in json.loads(text)]
            except (ValueError, TypeError) as exc:
                raise argparse.ArgumentTypeError(f"not a JSON list of values: {text!r}") from exc
        return convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def bare(annotation: Any) -> Any:
    """The annotation without `Annotated[...]` and without `None` in a union."""
    if get_origin(annotation) is Annotated:
        return bare(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        members = [bare(a) for a in get_args(annotation) if a is not type(None)]
        return members[0] if len(members) == 1 else Union[tuple(members)]  # noqa: UP007 (built at run time)
    return annotation


def scalar(annotation: Any) -> dict[str, Any]:
    """argparse settings of one value of this type."""
    if annotation is ImageInput:
        return {"type": image_input, "metavar": "IMAGE"}
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        return {"type": type(choices[0]), "choices": choices}
    if annotation in (int, float, str):
        return {"type": annotation}
    structured = isinstance(annotation, type) and issubclass(annotation, BaseModel | dict)
    if structured or get_origin(annotation) is dict:
        return {"type": json.loads, "metavar": "JSON"}
    return {"type": str}  # URLs and the like: the API validates the text


def option(field: FieldInfo) -> tuple[dict[str, Any], bool]:
    """argparse settings of a job field, and whether a single value stands for itself (`int | list[int]`)."""
    annotation = bare(field.annotation)
    members = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    lists = [m for m in members if get_origin(m) is list]
    help_ = field.description or ""
    if field.default is not None and not field.is_required() and field.default != "":
        help_ = f"{help_} (default: {field.default})".strip()
    if annotation is ImageInput:
        help_ = f"{help_} {IMAGE_HELP}".strip()
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction, "help": help_}, False
    if lists:
        item = scalar(bare(get_args(lists[0])[0]))
        item["type"] = json_or(item["type"])
        if choices := item.pop("choices", None):  # argparse would check a JSON list as one value: the API checks
            help_ = f"{help_} (each one of: {', '.join(map(str, choices))})"
        many = {"action": "extend", "nargs": "+", "help": f"{help_} (one or more, or a JSON list)"}
        return {**item, **many}, len(members) > 1
    return {**scalar(annotation), "help": help_}, False


def job_kinds() -> dict[str, type[JobBase]]:
    return {name: kind.schema for name, kind in registered().items()}


def add_submit(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    s = sub.add_parser("submit", help="post a job, show its progress, save its artifacts; or a group: --many")
    s.add_argument("--many", metavar="FILE", help="post a JSONL file's jobs (one a line; - for stdin) as one group")
    s.add_argument("--no-wait", action="store_true", help="with --many: print the group's id and return")
    s.set_defaults(func=guarded(cmd_submit_many))
    kinds = s.add_subparsers(dest="kind", metavar="KIND")
    for kind, cls in job_kinds().items():
        doc = (cls.__doc__ or kind).strip()
        k = kinds.add_parser(kind, help=doc.splitlines()[0], description=doc)
        one_value: list[str] = []
        for name, field in cls.model_fields.items():
            if name == "kind":
                continue
            settings, stands_alone = option(field)
            k.add_argument(f"--{name.replace('_', '-')}", dest=name, default=argparse.SUPPRESS, **settings)
            if stands_alone:
                one_value.append(name)
        k.add_argument("--out", dest="out_dir", type=Path, help="where to save the artifacts (default: ./<job id>)")
        fields = [n for n in cls.model_fields if n != "kind"]
        k.set_defaults(func=guarded(cmd_submit), job_fields=fields, one_value=one_value)


def add_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Registers the client commands on the `diffusion-jobs` parser."""
    add_submit(sub)
    j = sub.add_parser("jobs", help="a table of your jobs, newest first")
    j.add_argument("--status", choices=get_args(Status))
    j.add_argument("--kind", choices=sorted(job_kinds()))
    j.add_argument("--limit", type=int, default=20)
    j.set_defaults(func=guarded(cmd_jobs))
    c = sub.add_parser("cancel", help="cancel a job (it stops within one step)")
    c.add_argument("job_id", metavar="ID")
    c.set_defaults(func=guarded(cmd_cancel))
    sub.add_parser("models", help="the models you can use, and why any cannot run now").set_defaults(
        func=guarded(cmd_models)
    )
    g = sub.add_parser("group", help="a job group's counts and jobs (--cancel: cancel what has not ended)")
    g.add_argument("group_id", metavar="ID")
    g.add_argument("--cancel", action="store_true", help="cancel every job of the group that has not ended")
    g.set_defaults(func=guarded(cmd_group))


def flatten(values: list[Any]) -> list[Any]:
    return [v for value in values for v in (value if isinstance(value, list) else [value])]


def job_params(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    """The request body of the parsed options: lists flattened, image files uploaded."""
    params: dict[str, Any] = {}
    for name in args.job_fields:
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        if isinstance(value, list):
            value = flatten(value)
            if name in args.one_value and len(value) == 1:
                value = value[0]
        if isinstance(value, Path):
            value = {"upload_id": client.upload(value).id}
        params[name] = value
    return params


class ProgressBar:
    """The job's stage and step on stderr, one tqdm bar per stage."""

    def __init__(self, job_id: str) -> None:
        self.stage: str | None = None
        fmt = "{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed}<{remaining}"
        self.bar = tqdm(desc=f"{job_id} queued", file=sys.stderr, bar_format=fmt, dynamic_ncols=True, total=0)

    def show(self, job: Job) -> None:
        progress = job.progress
        if progress is None:
            where = f" #{job.queue_position}" if job.queue_position else ""
            self.bar.set_description(f"{job.id} {job.status}{where}", refresh=True)
            return
        if progress.stage != self.stage or progress.total != self.bar.total:
            self.stage = progress.stage
            self.bar.reset(total=progress.total)
        self.bar.set_description(f"{job.id} {progress.stage}", refresh=False)
        self.bar.n = progress.step
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def watch(client: Client, job: Job) -> Job:
    """The job once it ends, with a progress bar driven by its event stream."""
    bar = ProgressBar(job.id)
    try:
        bar.show(job)
        for event in client.events(job):
            if isinstance(event, Job):
                job = event
                bar.show(job)
        return job
    finally:
        bar.close()


def out(line: str) -> None:
    sys.stdout.write(line + "\n")


def err(line: str) -> None:
    sys.stderr.write(line + "\n")


def cmd_submit(args: argparse.Namespace) -> int:
    with Client() as client:
        job = client.submit(args.kind, **job_params(args, client))
        err(f"job {job.id} {job.status}")
        try:
            job = watch(client, job)
        except KeyboardInterrupt:
            err(f"stopped watching; job {job.id} goes on (diffusion-jobs cancel {job.id} stops it)")
            return 130
        if job.artifacts:
            saved = client.download(job, dest=args.out_dir or Path(job.id))
            out(f"saved {len(saved)} artifact(s) to {saved[0].parent}")
            for path in saved:
                out(f"  {path}")
    if job.status != "succeeded":
        reason = f": {job.error.type}: {job.error.message}" if job.error else ""
        err(f"job {job.id} {job.status}{reason}")
        return 1
    return 0


def read_jobs(source: str) -> list[dict[str, Any]]:
    """The jobs of a JSONL file (`-`: stdin), one JSON object a line; blank lines are skipped."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    jobs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            job = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{source}:{number}: not JSON ({exc})") from exc
        if not isinstance(job, dict):
            raise ValueError(f"{source}:{number}: not a JSON object")
        jobs.append(job)
    return jobs


def counted(group: Group) -> str:
    """The group's non-zero counts, e.g. "4 succeeded, 1 failed"."""
    return ", ".join(f"{n} {status}" for status, n in group.counts.items() if n) or "no jobs left"


class GroupBar:
    """One tqdm bar for a whole group on stderr: its jobs ended out of its total, and the counts."""

    def __init__(self, group: Group) -> None:
        fmt = "{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed}<{remaining} {postfix}"
        desc = f"group {group.id}"
        self.bar = tqdm(desc=desc, file=sys.stderr, bar_format=fmt, dynamic_ncols=True, total=group.total)

    def show(self, group: Group) -> None:
        self.bar.n = ended(group)
        self.bar.set_postfix_str(counted(group), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def cmd_submit_many(args: argparse.Namespace) -> int:
    if args.many is None:
        err("error: give a KIND (diffusion-jobs submit --help lists them), or --many FILE")
        return 2
    try:
        jobs = read_jobs(args.many)
    except (OSError, ValueError) as exc:
        err(f"error: {exc}")
        return 2
    with Client() as client:
        group = client.submit_group(jobs)
        err(f"group {group.id} of {group.total} jobs queued")
        if args.no_wait:
            out(group.id)
            return 0
        bar = GroupBar(group)
        try:
            group = client.wait_group(group, on_progress=bar.show)
        except KeyboardInterrupt:
            err(f"stopped watching; group {group.id} goes on (diffusion-jobs group {group.id} --cancel stops it)")
            return 130
        finally:
            bar.close()
    out(f"group {group.id}: {counted(group)}")
    return 0 if group.counts.get("succeeded", 0) == group.total else 1


def cmd_group(args: argparse.Namespace) -> int:
    with Client() as client:
        group = client.cancel_group(args.group_id) if args.cancel else client.get_group(args.group_id)
    out(f"group {group.id} {group.status}, {ended(group)}/{group.total} ended: {counted(group)}")
    for job_id in group.job_ids:
        out(f"  {job_id}")
    return 0


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        out("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def progress_of(job: Job) -> str:
    p = job.progress
    return f"{p.stage} {p.step}/{p.total}" if p else ""


def cmd_jobs(args: argparse.Namespace) -> int:
    with Client() as client:
        page = client.jobs(status=args.status, kind=args.kind, limit=args.limit)
    rows = [(j.id, j.kind, j.model, j.status, progress_of(j), j.created_at) for j in page.jobs]
    table(("ID", "KIND", "MODEL", "STATUS", "PROGRESS", "CREATED"), rows)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with Client() as client:
        job = client.cancel(args.job_id)
    out(f"{job.id} {job.status}" + (" (stops at its next step)" if job.status not in TERMINAL else ""))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    with Client() as client:
        models = client.models()
    rows = [(m.id, "yes" if m.available else f"no: {m.reason}", m.description) for m in models]
    table(("ID", "AVAILABLE", "DESCRIPTION"), rows)
    return 0


def guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The command, with API refusals and an unreachable server as a message and status 2."""

    def run(args: argparse.Namespace) -> int:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request would cover the progress bar
        try:
            return command(args)
        except ApiError as exc:
            err(f"error: {exc.message}")
            for detail in exc.details if len(exc.details) > 1 else []:
                err(f"  {'.'.join(str(p) for p in detail.get('loc', [])[1:])}: {detail.get('msg')}")
            return 2
        except httpx.TransportError as exc:
            err(f"error: cannot reach the API ({exc}); set DIFFUSION_JOBS_URL")
            return 2

    return run
