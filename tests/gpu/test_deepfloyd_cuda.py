"""DeepFloyd IF on CUDA in fp16 through a real worker (the tiny random IF of tests/tiny_if.py): every kind runs, each
job gives back the GPU memory it took, and a job that runs out of GPU memory fails with a clear error while the
worker serves the next one. Skipped where there is no CUDA; run on a lent GPU machine
(docs/operations/deployment.md, "GPU checks")."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.e2e.test_deepfloyd import MODEL, PHOTO, if_stack
from tests.helpers import Stack, client_for, finish, submit
from tests.tiny_if import build

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
BODIES = [
    {"kind": "sample", "prompt": PHOTO, "n": 4, "frames": True, "upsample": True},
    {"kind": "img2img", "image": {"dataset": "mnist-5k", "index": 0}, "prompt": PHOTO},
    {"kind": "anagram", "prompts": [PHOTO, "a pencil", PHOTO], "views": ["identity", "rotate_180", "jigsaw"]},
    {"kind": "anagram", "prompts": [PHOTO, "a pencil"], "view": "rotate_180", "upsample": True},
    {"kind": "hybrid", "prompts": [PHOTO, "a pencil"]},
    {
        "kind": "hybrid",
        "decomposition": "color",
        "prompts": ["a pencil"],
        "image": {"dataset": "mnist-5k", "index": 0},
        "clip_denoised": True,
        "upsample": True,
    },
    {"kind": "denoise", "image": {"dataset": "mnist-5k", "index": 0}, "method": "iterative"},
]


@pytest.fixture(scope="module")
def cuda_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stage1, stage2 = build(tmp_path_factory.mktemp("deepfloyd"))
    env = {
        "DEEPFLOYD_STAGE1": str(stage1),
        "DEEPFLOYD_STAGE2": str(stage2),
        "JOB_RETRIES": "0",
        "CUDA_MEMORY_FRACTION": "0.0005",  # about 70 MB of an H100/H200: the tiny IF fits, 64 images at once do not
    }
    with if_stack(redis_url, tmp_path_factory.mktemp("stack"), **env) as stack:
        yield stack


@pytest.mark.parametrize("body", BODIES, ids=[f"{b['kind']}-{i}" for i, b in enumerate(BODIES)])
def test_each_kind_runs_in_fp16_and_gives_its_memory_back(cuda_stack: Stack, api_key: str, body: dict) -> None:
    with client_for(cuda_stack, api_key) as client:
        job = submit(client, {"model": MODEL, "seed": 0, **body}).json()
        job = finish(client, job["id"], 120)
        assert job["status"] == "succeeded", job
        memory = job["result"]["gpu_memory"]
        assert memory["after_bytes"] == memory["before_bytes"] < memory["peak_bytes"]


def test_out_of_memory_fails_the_job_and_the_worker_serves_the_next(cuda_stack: Stack, api_key: str) -> None:
    with client_for(cuda_stack, api_key) as client:
        big = submit(client, {"model": MODEL, "kind": "sample", "n": 64, "upsample": True}).json()
        big = finish(client, big["id"], 120)
        assert big["status"] == "failed" and big["error"]["type"] == "out_of_memory", big
        assert "ran out of memory" in big["error"]["message"]
        small = finish(client, submit(client, {"model": MODEL, "kind": "sample", "n": 1}).json()["id"], 120)
        assert small["status"] == "succeeded", small


def test_the_tiny_pipelines_load_in_fp16_on_cuda(tmp_path: Path) -> None:
    from diffusers import IFPipeline

    stage1, _ = build(tmp_path)
    pipe = IFPipeline.from_pretrained(stage1, text_encoder=None, variant="fp16", dtype=torch.float16).to("cuda")
    assert pipe.unet.dtype == torch.float16 and pipe.unet.device.type == "cuda"
