"""What a worker loads once per process and keeps between jobs: model specs, noise schedules (later, weights)."""

from functools import lru_cache

from models.schedules import DDPMSchedule, make_schedule
from service.catalog import ModelSpec, builtin_models
from service.settings import Settings, get_settings
from worker.errors import InputError


class ModelCache:
    def __init__(self, settings: Settings) -> None:
        self.specs = builtin_models(settings)
        self._schedules: dict[str, DDPMSchedule] = {}

    def spec(self, model_id: str) -> ModelSpec:
        try:
            return self.specs[model_id]
        except KeyError:
            raise InputError(f"model {model_id!r} is not served by this worker") from None

    def schedule(self, spec: ModelSpec) -> DDPMSchedule:
        if spec.schedule["type"] != "ddpm":
            raise InputError(f"{spec.id} has no DDPM schedule")
        if spec.id not in self._schedules:
            s = spec.schedule
            self._schedules[spec.id] = make_schedule(
                s["beta_schedule"], s["num_timesteps"], s["beta_start"], s["beta_end"]
            )
        return self._schedules[spec.id]


@lru_cache(maxsize=1)
def get_cache() -> ModelCache:
    return ModelCache(get_settings())
