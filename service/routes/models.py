"""The models this deployment can run, and why any cannot run now."""

from fastapi import APIRouter

from service.deps import Models, Owner
from service.errors import NotFound
from service.schemas.responses import Model, ModelList

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelList)
async def list_models(owner: Owner, models: Models) -> ModelList:
    return ModelList(models=[Model(**spec.describe()) for spec in models.values()])


@router.get("/{model_id}", response_model=Model)
async def get_model(model_id: str, owner: Owner, models: Models) -> Model:
    spec = models.get(model_id)
    if spec is None:
        raise NotFound(f"No model {model_id!r}; GET /v1/models lists them.")
    return Model(**spec.describe())
