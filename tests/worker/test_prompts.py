"""Prompt embeddings for DeepFloyd IF: the Redis cache encodes a prompt once for every worker; a precomputed file
serves its own prompts and says which it lacks."""

from pathlib import Path

import pytest
import redis
import torch

from worker.errors import InputError
from worker.prompts import Cached, Precomputed, encoder_id


def test_a_prompt_is_encoded_once_and_then_read_from_redis(redis_url: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    calls: list[str] = []

    def load_encoder():
        def encode(prompt: str) -> torch.Tensor:
            calls.append(prompt)
            return torch.full((1, 4, 3), float(len(prompt)))

        return encode

    encoder = encoder_id("tests/tiny", {"d_model": 3, "run": torch.randint(0, 2**30, ()).item()})
    first = Cached(conn, encoder, load_encoder, ttl_s=60)
    other_worker = Cached(conn, encoder, lambda: pytest.fail("the second worker must not load the encoder"), ttl_s=60)
    assert torch.equal(first.embed("a pencil"), torch.full((1, 4, 3), 8.0))
    assert torch.equal(other_worker.embed("a pencil"), torch.full((1, 4, 3), 8.0))
    assert first.embed("a pencil").shape == (1, 4, 3) and calls == ["a pencil"]
    assert 0 < conn.ttl(next(conn.scan_iter(f"dj:prompt:{encoder}:*"))) <= 60


def test_precomputed_embeddings_serve_their_prompts_only(tmp_path: Path) -> None:
    path = tmp_path / "embeds.pt"
    torch.save({"": torch.zeros(1, 4, 3), "a pencil": torch.ones(4, 3)}, path)
    table = Precomputed(path)
    assert table.embed("a pencil").shape == (1, 4, 3)  # a (L, D) tensor gains its batch axis
    with pytest.raises(InputError, match="'a rocket ship' is not among the 2 precomputed"):
        table.embed("a rocket ship")


def test_a_file_that_is_not_a_table_of_tensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "embeds.pt"
    torch.save({"a pencil": [1, 2, 3]}, path)
    with pytest.raises(ValueError, match="dict of prompt -> tensor"):
        Precomputed(path)
