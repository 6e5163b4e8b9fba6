"""The models this deployment can run (the shipped ones and the caller's trained ones), and deleting trained ones."""

from typing import Annotated

from fastapi import APIRouter, Path, Response
from starlette.concurrency import run_in_threadpool

from core.errors import Conflict, NotFound
from core.model_registry import ModelRegistry
from core.model_spec import ModelSpec
from core.model_status import as_loaded
from core.schemas.responses import Model, ModelList
from service.deps import Conn, Models, Owner, Store
from service.error_docs import AUTHED, error_responses
from service.routes import BEARER

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=BEARER, responses=error_responses(*AUTHED, 422))
ModelId = Annotated[str, Path(description="a model id from GET /v1/models", examples=["mnist-ddpm"])]


def _find(conn: Conn, models: Models, owner: str, model_id: str) -> ModelSpec:
    spec = models.get(model_id) or ModelRegistry(conn).spec(owner, model_id)
    if spec is None:
        raise NotFound(f"No model {model_id!r} of yours or shipped; GET /v1/models lists them.")
    return as_loaded(conn, spec)


def _all(conn: Conn, models: Models, owner: str) -> list[ModelSpec]:
    return [*(as_loaded(conn, spec) for spec in models.values()), *ModelRegistry(conn).specs(owner)]


@router.get("", response_model=ModelList)
async def list_models(owner: Owner, models: Models, conn: Conn) -> ModelList:
    specs = await run_in_threadpool(_all, conn, models, owner)
    return ModelList(models=[Model(**spec.describe()) for spec in specs])


@router.get("/{model_id}", response_model=Model, responses=error_responses(404))
async def get_model(model_id: ModelId, owner: Owner, models: Models, conn: Conn) -> Model:
    return Model(**(await run_in_threadpool(_find, conn, models, owner, model_id)).describe())


@router.delete("/{model_id}", status_code=204, response_class=Response, responses=error_responses(404, 409))
async def delete_model(model_id: ModelId, owner: Owner, models: Models, conn: Conn, store: Store) -> Response:
    """Deletes a model the caller trained, with its checkpoint; jobs already queued on it then fail."""
    if model_id in models:
        raise Conflict(f"{model_id} ships with this deployment and cannot be deleted.")
    if not await run_in_threadpool(ModelRegistry(conn).delete, owner, model_id, store):
        raise NotFound(f"No model {model_id!r} of yours; GET /v1/models lists them.")
    return Response(status_code=204)
