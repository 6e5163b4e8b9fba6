"""Text embeddings of prompts for DeepFloyd IF: from a file of precomputed ones, or from IF's T5 encoder through
Redis, so that a prompt is encoded once for every worker. The empty prompt is the unconditional branch.

The encoder is the largest part of IF (T5-XXL, 4.8 B parameters): it is loaded on the first prompt that no cache
holds, and never where DEEPFLOYD_PROMPT_EMBEDS names a file (the course ships such a file for its prompts).
"""

import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import redis
import torch
from safetensors.torch import load, save

from core import keys
from worker.errors import InputError

log = logging.getLogger(__name__)
Encode = Callable[[str], torch.Tensor]  # prompt -> (1, L, D)


class Prompts(Protocol):
    def embed(self, prompt: str) -> torch.Tensor:
        """(1, L, D) on the CPU."""
        ...


@dataclass
class Precomputed:
    """A `torch.save`d {prompt: (1, L, D) or (L, D) tensor}, read once."""

    path: Path
    table: dict[str, torch.Tensor] = field(init=False)

    def __post_init__(self) -> None:
        table = torch.load(io.BytesIO(self.path.read_bytes()), map_location="cpu", weights_only=True)
        if not isinstance(table, dict) or not all(isinstance(v, torch.Tensor) for v in table.values()):
            raise ValueError(f"{self.path} must hold a dict of prompt -> tensor")
        self.table = {str(k): v if v.ndim == 3 else v[None] for k, v in table.items()}

    def embed(self, prompt: str) -> torch.Tensor:
        if prompt not in self.table:
            known = ", ".join(repr(p) for p in sorted(self.table)[:8])
            raise InputError(
                f"prompt {prompt!r} is not among the {len(self.table)} precomputed embeddings this deployment serves "
                f"(DEEPFLOYD_PROMPT_EMBEDS; e.g. {known})"
            )
        return self.table[prompt]


@dataclass
class Cached:
    """Embeddings by the encoder, cached in Redis under the encoder's id and the prompt's SHA-256."""

    conn: redis.Redis
    encoder_id: str
    load_encoder: Callable[[], Encode]
    ttl_s: int
    _encode: Encode | None = None

    def embed(self, prompt: str) -> torch.Tensor:
        key = keys.prompt_embedding(self.encoder_id, hashlib.sha256(prompt.encode()).hexdigest())
        blob = self.conn.get(key)
        if isinstance(blob, bytes):
            return load(blob)["embeds"]
        if self._encode is None:
            log.info("loading the text encoder (a prompt no cache holds)")
            self._encode = self.load_encoder()
        embeds = self._encode(prompt).detach().cpu().contiguous()
        self.conn.set(key, save({"embeds": embeds}), ex=self.ttl_s)
        return embeds


def encoder_id(source: str, config: dict[str, object]) -> str:
    """Who made an embedding: the stage I source and its text encoder's configuration."""
    return hashlib.sha256(f"{source}\n{sorted(config.items())}".encode()).hexdigest()[:16]
