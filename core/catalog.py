"""The models and datasets this deployment knows, described without loading anything (the API never imports torch).

A model names its queue (the pool of workers that runs it), its noise process, its classes (the prompts of the
in-house models), its defaults, and the capabilities it can run now: `kind` or `kind.method` strings. Kinds that need
no network run on every listed model; the rest once its checkpoint is on disk.
"""

import importlib.util
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.hf_sources import SourceMissing, read_config
from core.kinds import capabilities
from core.model_spec import ModelSpec
from core.queues import IF_QUEUE, MNIST_QUEUE
from core.settings import Settings

# What each kind of model runs, from what each job kind declares (core/kinds/__init__.py, `Family`).
NETWORK_FREE = capabilities("any")
DENOISER = NETWORK_FREE | capabilities("denoiser")
UNCONDITIONAL = NETWORK_FREE | capabilities("diffusion")
DIFFUSION = UNCONDITIONAL | capabilities("classes")  # a time-only model has no prompts to combine
TEXT_TO_IMAGE = DIFFUSION | capabilities("stage2")
MNIST_CLASSES = tuple(str(d) for d in range(10))
MNIST_DDPM = {"type": "ddpm", "num_timesteps": 300, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
FLOW = {"type": "flow", "steps": 50}


def checkpoints_dir(settings: Settings) -> Path:
    """`CHECKPOINTS_DIR`, or `models/checkpoints` found without importing the (torch-using) package."""
    if settings.checkpoints_dir is not None:
        return settings.checkpoints_dir
    spec = importlib.util.find_spec("models")
    assert spec is not None and spec.submodule_search_locations, "the models package is part of this project"
    return Path(spec.submodule_search_locations[0]) / "checkpoints"


UNLISTED = {"step_losses"}  # thousands of numbers: in training.json on disk, not in every GET /v1/models


def _read_info(folder: Path) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for name in ("training", "quality"):
        path = folder / f"{name}.json"
        if path.exists():
            info[name] = {k: v for k, v in json.loads(path.read_text()).items() if k not in UNLISTED}
    weights = sorted(folder.glob("*.safetensors"))
    if weights:
        info["size_bytes"] = sum(w.stat().st_size for w in weights)
    return info


def _mnist(
    root: Path,
    model_id: str,
    description: str,
    schedule: dict[str, Any],
    capabilities: frozenset[str],
    classes: tuple[str, ...],
    defaults: dict[str, Any],
    objective: str,
) -> ModelSpec:
    folder = root / model_id
    spec = ModelSpec(
        model_id,
        description,
        MNIST_QUEUE,
        28,
        1,
        (0.0, 1.0),
        schedule,
        capabilities,
        classes=classes,
        defaults=defaults,
        checkpoint=folder,
        info=_read_info(folder),
        objective=objective,
    )
    if not (folder / "config.json").exists():  # only the kinds that need no network run on it
        return replace(
            spec, capabilities=NETWORK_FREE, checkpoint=None, reason=f"its checkpoint is missing from {folder}"
        )
    return spec


IF_ID = "deepfloyd-if"
IF_DESCRIPTION = "DeepFloyd IF through diffusers: stage I (64 px) and stage II (256 px), T5 text prompts (CS180 part A)"
IF_DEFAULTS = {  # the course's: CFG 7, strided 990 -> 0 by 30; stage II as diffusers' IFSuperResolutionPipeline runs it
    "guidance_scale": 7.0,
    "stride": 30,
    "i_start": [1, 3, 5, 7, 10, 20],  # img2img: the course's SDEdit starts on that schedule
    "upsample": {"guidance_scale": 4.0, "steps": 50, "noise_level": 250},
}


IF_SCHEDULER = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "variance_type": "learned_range"}


def _if_schedule(scheduler: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "ddpm",
        "num_timesteps": int(scheduler.get("num_train_timesteps", 1000)),
        "beta_schedule": scheduler.get("beta_schedule", "linear"),
        "variance": scheduler.get("variance_type", "fixed_small"),
    }


def deepfloyd(settings: Settings) -> ModelSpec:
    """`deepfloyd-if` as its stages' configs describe it (sizes and schedule read, never assumed), or unavailable with
    the reason. Stage II, when it is missing, costs only the `upsample` capability."""
    unavailable = ModelSpec(
        IF_ID,
        IF_DESCRIPTION,
        IF_QUEUE,
        64,
        3,
        (-1.0, 1.0),
        _if_schedule(IF_SCHEDULER),
        frozenset(),
        reason="DEEPFLOYD_STAGE1 is not set (docs/deepfloyd.md, 'Serving the real model')",
        defaults=IF_DEFAULTS,
        shipped=True,
        objective="ddpm",
        text=True,
    )
    source, allow = settings.deepfloyd_stage1, settings.deepfloyd_allow_download
    if source is None:
        return unavailable
    try:
        unet = read_config(source, "unet/config.json", allow)
        scheduler = read_config(source, "scheduler/scheduler_config.json", allow)
    except SourceMissing as exc:
        return replace(unavailable, reason=f"stage I: {exc}")
    stage2: dict[str, Any] = {"available": False, "reason": "DEEPFLOYD_STAGE2 is not set"}
    if settings.deepfloyd_stage2 is not None:
        try:
            size = int(read_config(settings.deepfloyd_stage2, "unet/config.json", allow)["sample_size"])
            stage2 = {"available": True, "reason": None, "image_size": size, "source": settings.deepfloyd_stage2}
        except (SourceMissing, KeyError) as exc:
            stage2["reason"] = f"stage II: {exc}"
    return replace(
        unavailable,
        image_size=int(unet["sample_size"]),
        schedule=_if_schedule(scheduler),
        capabilities=TEXT_TO_IMAGE if stage2["available"] else DIFFUSION,
        reason=None,
        info={"stage1": {"source": source}, "stage2": stage2},
    )


def builtin_models(settings: Settings) -> dict[str, ModelSpec]:
    root = checkpoints_dir(settings)
    models = [
        _mnist(
            root,
            "mnist-denoiser",
            "single-step denoising UNet trained at sigma 0.5 (CS180 part B 1)",
            MNIST_DDPM,
            DENOISER,
            (),
            {"sigma": 0.5},
            "denoiser",
        ),
        _mnist(
            root,
            "mnist-ddpm",
            "time- and class-conditioned UNet, DDPM with T = 300 (CS180 part B 2)",
            MNIST_DDPM,
            DIFFUSION,
            MNIST_CLASSES,
            {"guidance_scale": 5.0, "stride": 1},
            "ddpm",
        ),
        _mnist(
            root,
            "mnist-flow",
            "time- and class-conditioned UNet, flow matching (CS180 part B 2, newer version)",
            FLOW,
            DIFFUSION,
            MNIST_CLASSES,
            {"guidance_scale": 5.0, "steps": 50},
            "flow",
        ),
        _mnist(
            root,
            "mnist-flow-2step",
            "mnist-flow distilled by reflow to 2 Euler steps, its CFG 5 baked in (docs/training.md, 'Distillation')",
            {**FLOW, "steps": 2},
            DIFFUSION,
            MNIST_CLASSES,
            {"steps": 2, "guidance_scale": 1.0, "sampler": "euler"},
            "flow",
        ),
        deepfloyd(settings),
    ]
    return {m.id: m for m in models}
