"""Typed dependencies of the routes (full-stack-fastapi-template style)."""

from typing import Annotated

import redis
from fastapi import Depends, Request

from service.auth import owner_of
from service.catalog import ModelSpec
from service.events import JobEvents
from service.jobs import JobRepo
from service.settings import Settings
from service.store import ArtifactStore


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_conn(request: Request) -> redis.Redis:
    conn: redis.Redis = request.app.state.conn
    return conn


def get_repo(request: Request) -> JobRepo:
    repo: JobRepo = request.app.state.repo
    return repo


def get_store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.store
    return store


def get_events(request: Request) -> JobEvents:
    events: JobEvents = request.app.state.events
    return events


def get_models(request: Request) -> dict[str, ModelSpec]:
    models: dict[str, ModelSpec] = request.app.state.models
    return models


Owner = Annotated[str, Depends(owner_of)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
Conn = Annotated[redis.Redis, Depends(get_conn)]
Repo = Annotated[JobRepo, Depends(get_repo)]
Store = Annotated[ArtifactStore, Depends(get_store)]
Events = Annotated[JobEvents, Depends(get_events)]
Models = Annotated[dict[str, ModelSpec], Depends(get_models)]
