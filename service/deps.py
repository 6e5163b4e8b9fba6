"""Typed dependencies of the routes (full-stack-fastapi-template style).

Each is `async def`: FastAPI runs a plain `def` dependency in its thread pool, a hop that cost more CPU than the
whole submission's own work (BENCHMARKS.md, "Queue and API"); these only read the app's state."""

from typing import Annotated

import redis
from fastapi import Depends, Request

from core.model_spec import ModelSpec
from core.settings import Settings
from core.store import ArtifactStore
from service.auth import owner_of
from service.events import JobEvents
from service.jobs import JobRepo


async def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def conn_of(request: Request) -> redis.Redis:
    conn: redis.Redis = request.app.state.conn
    return conn


async def repo_of(request: Request) -> JobRepo:
    repo: JobRepo = request.app.state.repo
    return repo


async def store_of(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.store
    return store


async def events_of(request: Request) -> JobEvents:
    events: JobEvents = request.app.state.events
    return events


async def models_of(request: Request) -> dict[str, ModelSpec]:
    models: dict[str, ModelSpec] = request.app.state.models
    return models


Owner = Annotated[str, Depends(owner_of)]
SettingsDep = Annotated[Settings, Depends(settings_of)]
Conn = Annotated[redis.Redis, Depends(conn_of)]
Repo = Annotated[JobRepo, Depends(repo_of)]
Store = Annotated[ArtifactStore, Depends(store_of)]
Events = Annotated[JobEvents, Depends(events_of)]
Models = Annotated[dict[str, ModelSpec], Depends(models_of)]
