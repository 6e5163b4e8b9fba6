"""DeepFloyd IF in a worker: its stages loaded the real diffusers way, kept loaded between jobs, behind the same
model interface as the in-house UNets (a noise process, a predictor, conditions).

Stage I and II come from DEEPFLOYD_STAGE1 / DEEPFLOYD_STAGE2 through `IFPipeline.from_pretrained` and
`IFSuperResolutionPipeline.from_pretrained`, without their text encoders, safety checkers and watermarkers: the loops
need only each stage's UNet and schedulers, and the T5 encoder loads on its own (worker/prompts.py). fp16 on CUDA,
float32 on a CPU; with DEEPFLOYD_CPU_OFFLOAD, accelerate keeps each UNet on the CPU until it runs. Weights load from
DEEPFLOYD_VARIANT's files (the hub's `*.fp16.safetensors`) where a folder has them, else from the plain ones.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis
import torch
from diffusers.utils.import_utils import is_accelerate_available
from torch import nn

from core.hf_sources import local_folder, read_config
from core.model_spec import ModelSpec
from core.settings import Settings
from models.deepfloyd import LowRes, if_predictor
from models.guidance import Predict
from models.processes import DDPM, NoiseProcess, clipped
from models.schedules import from_betas
from worker.errors import InputError
from worker.prompts import Cached, Encode, Precomputed, Prompts, encoder_id

log = logging.getLogger(__name__)
NOT_NEEDED: dict[str, Any] = {  # parts of the pipelines the loops never call
    "text_encoder": None,
    "tokenizer": None,
    "safety_checker": None,
    "feature_extractor": None,
    "watermarker": None,
    "requires_safety_checker": False,
}


@dataclass(frozen=True)
class Stage:
    unet: nn.Module  # diffusers' UNet2DConditionModel
    process: DDPM  # the stage's own schedule, with IF's learned variance
    size: int  # pixels per side, from the UNet's config

    def predictor(self, low_res: LowRes | None = None) -> Predict:
        """The stage's UNet behind the loop's call; stage II's with its low-resolution condition."""
        return if_predictor(self.unet, self.process.schedule.num_timesteps, low_res)


@dataclass(frozen=True)
class IFModel:
    spec: ModelSpec
    process: NoiseProcess  # stage I's (clipped where a job asks)
    device: torch.device
    stage1: Stage
    prompts: Prompts
    stage2: Stage | None = None
    noising: DDPM | None = None  # stage II's image-noising schedule, for its low-resolution input
    stage2_reason: str | None = None  # why there is no stage II

    @property
    def predict(self) -> Predict:
        return self.stage1.predictor()

    def condition(self, prompt: str | None, class_label: int | None, n: int) -> torch.Tensor:
        """(n, L, D) the prompt's text embedding per sample; no prompt: the empty prompt's, the unconditional."""
        if class_label is not None:
            raise InputError(f"{self.spec.id} is conditioned on text: give `prompt`, not `class_label`")
        embeds = self.prompts.embed(prompt or "")  # (1, L, D)
        return embeds.to(self.device).expand(n, -1, -1)

    def clipped(self) -> "IFModel":
        """Both stages' loops with each step's clean estimate clipped to the value range (a job's `clip_denoised`)."""
        lo, hi = self.spec.value_range
        stage2 = (
            None if self.stage2 is None else replace(self.stage2, process=replace(self.stage2.process, clip=(lo, hi)))
        )
        return replace(self, process=clipped(self.process, lo, hi), stage2=stage2)


def _ddpm(scheduler: Any) -> DDPM:
    """A diffusers DDPMScheduler's schedule, as the loops' process."""
    return DDPM(from_betas(scheduler.betas))


def _load_options(variant: str | None, device: torch.device) -> dict[str, Any]:
    """What every part of IF loads with: the file variant, and fp16 on CUDA."""
    return {"variant": variant, "dtype": torch.float16 if device.type == "cuda" else torch.float32}


def _placed(pipe: Any, settings: Settings, device: torch.device) -> Any:
    if settings.deepfloyd_cpu_offload and device.type == "cuda":
        pipe.enable_model_cpu_offload()  # needs accelerate
    else:
        pipe.to(device)
    return pipe


def _has_variant(folder: Path, variant: str) -> bool:
    """Whether weights under `folder` are saved as `variant`: `unet/diffusion_pytorch_model.fp16.safetensors`, or
    sharded `text_encoder/model.fp16-00001-of-00002.safetensors`, the names diffusers tells a part's variant by."""
    return any(folder.rglob(f"*.{variant}*"))


def _variant(folder: Path, variant: str | None, part: str) -> str | None:
    """The variant `part` loads with from `folder`: the configured one where its files are there, else none (the plain
    weights), said in one log line; diffusers itself refuses a variant none of a pipeline's parts has."""
    if variant is None or _has_variant(folder, variant):
        return variant
    log.warning("%s: no %s weights in %s, loading its plain weights", part, variant, folder)
    return None


def _folder(source: str, settings: Settings, part: str) -> tuple[Path, str | None]:
    """The stage's folder and the variant it loads with. A download fetches the variant's weights, or the plain ones
    where the repository has none (never both: they are gigabytes each)."""
    variant, allow = settings.deepfloyd_variant, settings.deepfloyd_allow_download
    files = ["*.json", "*.txt", "*.model", "tokenizer/*"]
    folder = local_folder(source, allow, [*files, f"*.{variant}*" if variant else "*.safetensors"])
    if variant is not None and allow and not _has_variant(folder, variant):
        folder = local_folder(source, allow, [*files, "*.safetensors"])
    return folder, _variant(folder, variant, part)


def _encoder(
    pipe: Any, folder: Path, variant: str | None, settings: Settings, device: torch.device
) -> Callable[[], Encode]:
    """Loads IF's T5 encoder and tokenizer when first called (in `variant` where its own files are there, as diffusers
    chooses per part); encodes as IFPipeline.encode_prompt does."""

    def load() -> Encode:
        from transformers import T5EncoderModel, T5Tokenizer

        options = _load_options(_variant(folder / "text_encoder", variant, "stage I's text encoder"), device)
        encoder = T5EncoderModel.from_pretrained(folder, subfolder="text_encoder", **options).eval()
        pipe.tokenizer = T5Tokenizer.from_pretrained(folder, subfolder="tokenizer")
        offload = settings.deepfloyd_cpu_offload and device.type == "cuda"
        pipe.text_encoder = encoder if offload else encoder.to(device)

        def encode(prompt: str) -> torch.Tensor:
            if offload:
                encoder.to(device)
            try:
                embeds, _ = pipe.encode_prompt(
                    prompt, do_classifier_free_guidance=False, device=device, clean_caption=False
                )
            finally:
                if offload:
                    encoder.to("cpu")
            out: torch.Tensor = embeds
            return out

        return encode

    return load


def load_if(spec: ModelSpec, settings: Settings, device: torch.device, conn: redis.Redis) -> IFModel:
    """Both stages, as the deployment configures them. Raises what stops stage I from loading."""
    from diffusers import IFPipeline, IFSuperResolutionPipeline  # imports transformers: only where IF is served

    assert settings.deepfloyd_stage1 is not None, "the catalog lists deepfloyd-if as available only when configured"
    low_cpu = {"low_cpu_mem_usage": is_accelerate_available()}
    folder, variant = _folder(settings.deepfloyd_stage1, settings, "stage I")
    pipe = IFPipeline.from_pretrained(folder, **NOT_NEEDED, **_load_options(variant, device), **low_cpu)
    pipe = _placed(pipe, settings, device)
    stage1 = Stage(pipe.unet, _ddpm(pipe.scheduler), int(pipe.unet.config.sample_size))
    prompts: Prompts
    if settings.deepfloyd_prompt_embeds is not None:
        prompts = Precomputed(settings.deepfloyd_prompt_embeds)
        spec = replace(spec, info={**spec.info, "prompts": sorted(prompts.table)})  # the only ones it can serve
    else:
        config = read_config(str(folder), "text_encoder/config.json")
        prompts = Cached(
            conn,
            encoder_id(settings.deepfloyd_stage1, config),
            _encoder(pipe, folder, variant, settings, device),
            settings.prompt_cache_ttl_s,
        )
    model = IFModel(spec, stage1.process, device, stage1, prompts)
    if settings.deepfloyd_stage2 is None:
        return _without_stage2(model, "DEEPFLOYD_STAGE2 is not set")
    try:
        folder2, variant2 = _folder(settings.deepfloyd_stage2, settings, "stage II")
        sr = IFSuperResolutionPipeline.from_pretrained(
            folder2, **NOT_NEEDED, **_load_options(variant2, device), **low_cpu
        )
        sr = _placed(sr, settings, device)
    except Exception as exc:  # stage I serves on; upsampling says why it cannot
        log.exception("stage II of deepfloyd-if did not load")
        return _without_stage2(model, f"stage II did not load: {type(exc).__name__}: {exc}"[:300])
    stage2 = Stage(sr.unet, _ddpm(sr.scheduler), int(sr.unet.config.sample_size))
    return replace(model, stage2=stage2, noising=_ddpm(sr.image_noising_scheduler))


def _without_stage2(model: IFModel, reason: str) -> IFModel:
    """Stage I alone: no `upsample`, and the model's description says why."""
    info = {**model.spec.info, "stage2": {"available": False, "reason": reason}}
    spec = replace(model.spec, capabilities=model.spec.capabilities - {"upsample"}, info=info)
    return replace(model, spec=spec, stage2_reason=reason)
