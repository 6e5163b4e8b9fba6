"""Typed dependencies of the routes (full-stack-fastapi-template style).

Each is `async def`: FastAPI runs a plain `def` dependency in its thread pool, a hop that cost more CPU than the
whole submission's own work (BENCHMARKS.md, "Queue and API"); these only read the app's state."""

from typing import Annotated

import redis
from fastapi import Depends, Request

from core.catalog import ModelSpec
from core.settings import Settings
from core.store import ArtifactStore
from service.auth import owner_of
from service.events import JobEvents
from service.jobs import JobRepo


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_conn(request: Request) -> redis.Redis:
    conn: redis.Redis = request.app.state.conn
    return conn


async def get_repo(request: Request) -> JobRepo:
    repo: JobRepo = request.app.state.repo
    return repo


async def get_store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.store
    return store


async def get_events(request: Request) -> JobEvents:
    events: JobEvents = request.app.state.events
    return events


async def get_models(request: Request) -> dict[str, ModelSpec]:
    models: dict[str, ModelSpec] = request.app.state.models
    return models


Owner = Annotated[str, Depends(owner_of)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
Conn = Annotated[redis.Redis, Depends(get_conn)]
Repo = Annotated[JobRepo, Depends(get_repo)]
Store = Annotated[ArtifactStore, Depends(get_store)]
Events = Annotated[JobEvents, Depends(get_events)]
Models = Annotated[dict[str, ModelSpec], Depends(get_models)]
