"""Job groups: submit many jobs as one (all admitted or none queued), read their counts, cancel them."""

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, HttpUrl
from starlette.concurrency import run_in_threadpool

from core import kinds
from core.errors import NotFound
from core.schemas.responses import Group
from service.deps import Models, Owner, Repo
from service.error_docs import AUTHED, error_responses
from service.groups import GroupRepo
from service.jobs import body_digest
from service.routes import BEARER

JobRequest = kinds.request_type()
GROUP_ID = re.compile(r"[A-Za-z0-9_-]+")
LOCATION = {"Location": {"description": "/v1/groups/{id}", "schema": {"type": "string"}, "required": True}}
router = APIRouter(prefix="/v1/groups", tags=["groups"], dependencies=BEARER, responses=error_responses(*AUTHED, 422))


class GroupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[JobRequest] = Field(  # type: ignore[valid-type]
        min_length=1,
        description="the jobs, each a body of POST /v1/jobs (no `train`); at most MAX_GROUP_JOBS (default 1000)",
    )
    webhook: HttpUrl | None = Field(
        default=None,
        description="an http(s) URL the service POSTs the group to, signed, once every job has ended "
        "(event `group.completed`; docs/client.md, 'Webhooks')",
    )


async def group_id_of(group_id: str) -> str:
    """The path's group id; one that no group can have is unknown at once."""
    if not GROUP_ID.fullmatch(group_id):
        raise NotFound(f"No group {group_id!r} of yours exists; group ids are the ones POST /v1/groups answered.")
    return group_id


GroupId = Annotated[str, Depends(group_id_of)]


@router.post(
    "",
    status_code=202,
    response_model=Group,
    responses={202: {"headers": LOCATION}, **error_responses(400, 403, 409, 413, 415)},
)
async def submit_group(
    request: Request,
    body: GroupRequest,
    owner: Owner,
    repo: Repo,
    models: Models,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JSONResponse:
    webhook = str(body.webhook) if body.webhook is not None else None
    digest = body_digest(await request.body())
    create = GroupRepo(repo).create
    group = await run_in_threadpool(create, owner, body.jobs, webhook, models, idempotency_key, digest)
    return JSONResponse(group.model_dump(mode="json"), 202, headers={"Location": f"/v1/groups/{group.id}"})


@router.get("/{group_id}", response_model=Group, responses=error_responses(404))
async def get_group(group_id: GroupId, owner: Owner, repo: Repo) -> Group:
    return await run_in_threadpool(GroupRepo(repo).get, owner, group_id)


@router.delete("/{group_id}", status_code=202, response_model=Group, responses=error_responses(404))
async def cancel_group(group_id: GroupId, owner: Owner, repo: Repo) -> Group:
    return await run_in_threadpool(GroupRepo(repo).cancel, owner, group_id)
