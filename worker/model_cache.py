"""What a worker loads once per process and keeps between jobs: each model's noise process and network."""

from dataclasses import dataclass
from functools import lru_cache

import torch

from models.guidance import Predict
from models.predictors import unet_predictor
from models.processes import DDPM, Flow, NoiseProcess
from models.schedules import make_schedule
from models.unet import CS180UNet
from service.catalog import ModelSpec, builtin_models
from service.settings import Settings, get_settings
from worker.errors import InputError


@dataclass(frozen=True)
class LoadedModel:
    spec: ModelSpec
    process: NoiseProcess  # for the forward process of every model, and the loops of diffusion models
    net: CS180UNet | None  # None until the model's checkpoint ships
    device: torch.device

    @property
    def predict(self) -> Predict:
        if self.net is None:
            raise InputError(f"{self.spec.id} has no network here: {self.spec.reason}")
        return unet_predictor(self.net)


def make_process(spec: ModelSpec) -> NoiseProcess:
    s = spec.schedule
    if s["type"] == "flow":
        return Flow(default_steps=int(s["steps"]))
    return DDPM(make_schedule(s["beta_schedule"], int(s["num_timesteps"]), s["beta_start"], s["beta_end"]))


class ModelCache:
    def __init__(self, settings: Settings) -> None:
        self.specs = builtin_models(settings)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._loaded: dict[str, LoadedModel] = {}

    def spec(self, model_id: str) -> ModelSpec:
        try:
            return self.specs[model_id]
        except KeyError:
            raise InputError(f"model {model_id!r} is not served by this worker") from None

    def load(self, model_id: str) -> LoadedModel:
        if model_id not in self._loaded:
            spec = self.spec(model_id)
            net = None
            if spec.checkpoint is not None:
                net = CS180UNet.from_pretrained(spec.checkpoint, low_cpu_mem_usage=False).to(self.device).eval()
            self._loaded[model_id] = LoadedModel(spec, make_process(spec), net, self.device)
        return self._loaded[model_id]


@lru_cache(maxsize=1)
def get_cache() -> ModelCache:
    return ModelCache(get_settings())
