"""Artifacts of a job: written to the store as they are made, so a canceled job keeps what it made."""

import torch
from rq.job import Job as RQJob

from core import keys
from core.store import ArtifactStore
from models.grid import make_grid
from models.imageio import encode_png
from worker.hook import StepHook


class Outputs:
    def __init__(self, job: RQJob, store: ArtifactStore, hook: StepHook, ttl_s: int) -> None:
        self.job = job
        self.store = store
        self.hook = hook
        self.ttl_s = ttl_s
        self.pngs: dict[str, torch.Tensor] = {}  # (C, H, W) in [0, 1]: what each PNG was made from

    def save(self, name: str, data: bytes, media_type: str) -> None:
        with self.hook.trace.span("artifact write", {"artifact.name": name, "artifact.bytes": len(data)}):
            self.store.put(keys.artifact(self.job.id, name), data, media_type, self.ttl_s)
            listed = [a for a in self.job.meta.get("artifacts", []) if a["name"] != name]
            self.hook.save_meta(artifacts=[*listed, {"name": name, "media_type": media_type, "bytes": len(data)}])

    def save_png(self, name: str, image: torch.Tensor) -> None:
        """`image`: (C, H, W) in [0, 1]."""
        self.save(name, encode_png(image), "image/png")
        self.pngs[name] = image

    def save_images(self, images: torch.Tensor, nrow: int | None = None) -> None:
        """`images`: (B, C, H, W) in [0, 1]; each as image_{i}.png, and a grid.png when there are several."""
        for i, image in enumerate(images):
            self.save_png(f"image_{i}.png", image)
        if len(images) > 1:
            self.save_png("grid.png", make_grid(images, nrow=nrow))
