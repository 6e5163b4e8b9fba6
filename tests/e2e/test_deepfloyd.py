"""Every part A kind on `deepfloyd-if` through HTTP and a real `deepfloyd` worker, on a tiny random IF (both stages,
T5 encoder, SentencePiece tokenizer) saved the hub's way and loaded through diffusers' `from_pretrained`.

Random weights draw nothing; what is checked is what must hold for any weights: sizes from the pipelines' configs,
artifacts, determinism, progress, cancel, the inpainting invariant, both ways to a prompt's embedding (the encoder
through Redis, a precomputed file) giving the same pixels, and the rules at the door.
"""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import redis
import torch

from core.samplers import EPS
from models.views import VIEWS, make_view
from tests.helpers import (
    Stack,
    artifact,
    assert_same_pixels,
    b64,
    client_for,
    decode,
    finish,
    names,
    png,
    running_stack,
    submit,
    succeeded,
    wait_until,
)
from tests.tiny_if import PROMPTS, STAGE1_SIZE, STAGE2_SIZE, build, save_embeddings

pytestmark = pytest.mark.slow
MODEL = "deepfloyd-if"
OLD_MAN, CAMPFIRE, SKULL, WATERFALLS, PHOTO = PROMPTS[:5]
RNG = np.random.default_rng(0)
PHOTO_PIXELS = RNG.integers(0, 256, (STAGE1_SIZE, STAGE1_SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_if(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("deepfloyd")
    stage1, stage2 = build(root)
    embeds = root / "prompt_embeds.pt"
    save_embeddings(stage1, embeds, [OLD_MAN, CAMPFIRE])
    return stage1, stage2, embeds


@contextmanager
def if_stack(redis_url: str, tmp: Path, **env: str) -> Iterator[Stack]:
    """The API and one worker on the `deepfloyd` queue."""
    with running_stack(redis_url, tmp, workers=0, **env) as stack:
        stack.start_worker("deepfloyd")
        stack.wait_worker_ready()
        yield stack


@pytest.fixture(scope="module")
def stack(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, tiny_if: tuple[Path, Path, Path]
) -> Iterator[Stack]:
    stage1, stage2, _ = tiny_if
    env = {"DEEPFLOYD_STAGE1": str(stage1), "DEEPFLOYD_STAGE2": str(stage2)}
    with if_stack(redis_url, tmp_path_factory.mktemp("stack"), **env) as s:
        yield s


def size(client, job: dict, name: str) -> tuple[int, ...]:
    return decode(artifact(client, job, name)).shape


def photo(client) -> dict:
    upload = client.post("/v1/uploads", content=png(PHOTO_PIXELS), headers={"Content-Type": "image/png"}).json()
    return {"upload_id": upload["id"]}


def test_the_model_is_listed_with_sizes_from_its_configs(client):
    model = client.get(f"/v1/models/{MODEL}").json()
    assert model["available"] and model["reason"] is None and model["text"]
    assert model["queue"] == "deepfloyd" and model["image_size"] == STAGE1_SIZE and model["channels"] == 3
    assert model["stage2"]["image_size"] == STAGE2_SIZE
    assert model["schedule"] == {
        "type": "ddpm",
        "num_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
        "variance": "learned_range",
    }
    assert {"sample", "img2img", "inpaint", "anagram", "hybrid", "upsample", "denoise.iterative"} <= set(
        model["capabilities"]
    )


def test_sample_with_cfg_is_deterministic_and_shows_progress(client):
    body = {"kind": "sample", "model": MODEL, "prompt": PHOTO, "n": 2, "seed": 3, "frames": True}
    job = succeeded(submit(client, body))
    assert job["params"]["guidance_scale"] == 7.0 and job["params"]["stride"] == 30  # the course's defaults
    assert names(job) == {"image_0.png", "image_1.png", "grid.png", "frames.gif"}
    assert size(client, job, "image_0.png") == (STAGE1_SIZE, STAGE1_SIZE, 3)
    progress = {k: job["progress"][k] for k in ("stage", "step", "total")}
    assert progress == {"stage": "sampling", "step": 34, "total": 34}  # 990 -> 0 by 30, then the clean end
    again = succeeded(submit(client, body))
    for name in ("image_0.png", "image_1.png"):
        assert artifact(client, job, name) == artifact(client, again, name)
    other = succeeded(submit(client, {**body, "prompt": SKULL}))
    assert artifact(client, job, "image_0.png") != artifact(client, other, "image_0.png")
    alone = succeeded(submit(client, {**body, "n": 1, "seed": 4, "frames": False}))
    assert artifact(client, job, "image_1.png") == artifact(client, alone, "image_0.png")  # per-sample generators


def test_queued_sample_jobs_on_other_prompts_run_as_one_batch_with_their_own_pixels(client):
    busy = submit(client, {"kind": "sample", "model": MODEL, "prompt": PHOTO, "n": 1, "seed": 1, "upsample": True}, 0)
    bodies = [
        {"kind": "sample", "model": MODEL, "prompt": PHOTO, "n": 1, "seed": 20},
        {"kind": "sample", "model": MODEL, "prompt": SKULL, "n": 2, "seed": 30},
    ]
    queued = [submit(client, body, wait=0).json()["id"] for body in bodies]  # behind the job in hand
    assert busy.status_code == 202
    jobs = [finish(client, job_id, 120) for job_id in queued]
    for job in jobs:
        assert job["status"] == "succeeded" and job["result"]["batch"] == {"jobs": 2, "images": 3}
    assert "batch" not in finish(client, busy.json()["id"], 120)["result"]  # stage II: never batched
    for body, job in zip(bodies, jobs, strict=True):
        alone = succeeded(submit(client, body))
        assert "batch" not in alone["result"] and names(alone) == names(job)
        for name in names(job):
            assert_same_pixels(artifact(client, job, name), artifact(client, alone, name))


def test_noise_and_the_three_denoisers(client):
    image = photo(client)
    noise = succeeded(submit(client, {"kind": "noise", "model": MODEL, "image": image, "timesteps": [250, 500, 750]}))
    assert names(noise) == {"image_0.png", "image_1.png", "image_2.png", "grid.png"}
    noisy = [decode(artifact(client, noise, f"image_{i}.png")) for i in range(3)]
    clean = PHOTO_PIXELS / 255
    assert [round(float(np.abs(n - clean).mean()), 2) for n in noisy] == sorted(
        round(float(np.abs(n - clean).mean()), 2) for n in noisy
    )  # noisier with t
    for method, extra in (("blur", {"timestep": 500}), ("one_step", {"timestep": 500}), ("iterative", {})):
        job = succeeded(submit(client, {"kind": "denoise", "model": MODEL, "image": image, "method": method, **extra}))
        assert {"noisy.png", "image_0.png", "grid.png"} <= names(job), method
    iterative = job
    assert iterative["params"]["i_start"] == 10 and iterative["result"]["t_start"] == 690  # the course's start
    assert iterative["progress"]["total"] == 34 - 10
    for method, extra in (("one_step", {"timestep": 500}), ("iterative", {})):
        body = {"kind": "denoise", "model": MODEL, "image": image, "method": method, "seed": 4, **extra}
        plain, photo_of = (succeeded(submit(client, {**body, **p})) for p in ({}, {"prompt": PHOTO}))
        assert artifact(client, plain, "image_0.png") != artifact(client, photo_of, "image_0.png"), method


def test_img2img_defaults_to_the_course_list_and_resizes_other_sizes(client):
    job = succeeded(
        submit(client, {"kind": "img2img", "model": MODEL, "image": photo(client), "prompt": PHOTO, "seed": 1})
    )
    assert job["params"]["i_start"] == [1, 3, 5, 7, 10, 20]
    assert job["result"]["t_start"] == [960, 900, 840, 780, 690, 390]
    assert names(job) == {f"image_{k}.png" for k in range(6)} | {"grid.png"}
    wide = np.zeros((24, 40, 3), np.uint8)
    job = succeeded(
        submit(client, {"kind": "img2img", "model": MODEL, "image": {"base64": b64(png(wide))}, "i_start": 30})
    )
    assert job["result"]["image_resized_from"] == [24, 40]
    assert size(client, job, "image_0.png") == (STAGE1_SIZE, STAGE1_SIZE, 3)


def test_inpainting_keeps_every_unmasked_pixel_exactly(client):
    mask = np.zeros((STAGE1_SIZE, STAGE1_SIZE), np.uint8)
    mask[4:12, 4:12] = 255
    upload = client.post("/v1/uploads", content=png(mask), headers={"Content-Type": "image/png"}).json()
    body = {"kind": "inpaint", "model": MODEL, "image": photo(client), "mask": {"upload_id": upload["id"]}}
    job = succeeded(submit(client, {**body, "prompt": CAMPFIRE, "n": 2, "seed": 5}))
    for i in range(2):
        out = decode(artifact(client, job, f"image_{i}.png"))
        keep = mask == 0
        assert np.array_equal(out[keep], PHOTO_PIXELS[keep] / 255)
        assert not np.array_equal(out[~keep], PHOTO_PIXELS[~keep] / 255)


@pytest.mark.parametrize("view", [v for v in VIEWS if v != "identity"])
def test_anagrams_under_each_view(client, view):
    body = {"kind": "anagram", "model": MODEL, "prompts": [OLD_MAN, CAMPFIRE], "view": view, "stride": 100}
    job = succeeded(submit(client, body))
    assert names(job) == {"image_0.png", "view_0.png", "view_1.png", "animation.gif"}
    upright, turned = (decode(artifact(client, job, n)) for n in ("image_0.png", "view_1.png"))
    assert np.array_equal(decode(artifact(client, job, "view_0.png")), upright)
    canvas = torch.from_numpy(upright).permute(2, 0, 1)[None] * 2 - 1  # IF's [-1, 1]
    expected = ((make_view(view, None, STAGE1_SIZE).view(canvas) + 1) / 2)[0].permute(1, 2, 0).numpy()
    assert np.allclose(turned, expected, atol=1 / 255 + 1e-6)  # negate: 1 - u, up to the PNG's rounding


def test_hybrid(client):
    body = {"kind": "hybrid", "model": MODEL, "prompts": [SKULL, WATERFALLS], "n": 2, "seed": 2}
    job = succeeded(submit(client, body))
    assert job["params"]["kernel_size"] == 33 and job["params"]["sigma"] == 2.0
    assert names(job) == {"image_0.png", "image_1.png", "grid.png"}


@pytest.mark.parametrize(
    "extra",
    [
        {"decomposition": "color"},
        {"decomposition": "scale", "scale_factor": 8},
        {"decomposition": "motion", "motion_length": 5},
        {"prompts": [SKULL, WATERFALLS, PHOTO]},
    ],
    ids=["color", "scale", "motion", "three-bands"],
)
def test_factorized_hybrids(client, extra):
    body = {"kind": "hybrid", "model": MODEL, "prompts": [SKULL, WATERFALLS], "n": 1, "seed": 2, "stride": 100}
    job = succeeded(submit(client, {**body, **extra}))
    assert job["result"]["decomposition"] == extra.get("decomposition", "frequency")
    assert size(client, job, "image_0.png") == (STAGE1_SIZE, STAGE1_SIZE, 3)


def test_upsample_an_image_and_any_kind_with_upsample_true(client):
    job = succeeded(
        submit(client, {"kind": "upsample", "model": MODEL, "image": photo(client), "prompt": PHOTO, "seed": 0})
    )
    assert (
        job["params"]["guidance_scale"] == 4.0 and job["params"]["steps"] == 50 and job["params"]["noise_level"] == 250
    )
    assert size(client, job, "image_0.png") == (STAGE2_SIZE, STAGE2_SIZE, 3)
    assert job["progress"]["stage"] == "upsampling" and job["progress"]["total"] == 50
    body = {"kind": "sample", "model": MODEL, "prompt": PHOTO, "n": 2, "seed": 8, "upsample": True}
    both = succeeded(submit(client, body))
    assert names(both) == {"image_0.png", "image_1.png", "grid.png", "upsampled_0.png", "upsampled_1.png"}
    assert both["result"]["upsampled"] == ["upsampled_0.png", "upsampled_1.png"]
    assert size(client, both, "upsampled_1.png") == (STAGE2_SIZE, STAGE2_SIZE, 3)
    plain = succeeded(submit(client, {**body, "upsample": False}))
    assert artifact(client, both, "image_1.png") == artifact(client, plain, "image_1.png")  # stage I untouched


@pytest.mark.parametrize("sampler", list(EPS))
def test_both_stages_run_with_every_eps_sampler(client, sampler):
    body = {"kind": "sample", "model": MODEL, "prompt": PHOTO, "n": 1, "seed": 2, "sampler": sampler, "steps": 3}
    job = succeeded(submit(client, {**body, "upsample": True}))
    assert job["params"]["sampler"] == sampler
    assert size(client, job, "upsampled_0.png") == (STAGE2_SIZE, STAGE2_SIZE, 3)
    stage2 = 50 if sampler == "ddpm" else EPS[sampler].default_steps  # stage II: the sampler's default steps
    assert job["progress"] == {**job["progress"], "stage": "upsampling", "step": stage2, "total": stage2}
    image = decode(artifact(client, job, "upsampled_0.png"))
    assert image.std() > 0  # a picture, not a constant
    up = {"kind": "upsample", "model": MODEL, "image": photo(client), "prompt": PHOTO, "seed": 0, "sampler": sampler}
    alone = succeeded(submit(client, {**up, "steps": 2}))
    assert alone["progress"]["total"] == 2 and alone["params"]["sampler"] == sampler


def test_a_prompt_is_encoded_once_for_all_workers(client, stack: Stack):
    conn = redis.Redis.from_url(stack.env["REDIS_URL"])
    prompt = "a rocket ship"
    before = set(conn.scan_iter("dj:prompt:*"))
    succeeded(submit(client, {"kind": "sample", "model": MODEL, "prompt": prompt, "n": 1, "stride": 300}))
    added = set(conn.scan_iter("dj:prompt:*")) - before
    assert len(added) <= 2 and added  # the prompt's, and the empty prompt's unless an earlier job cached it
    succeeded(submit(client, {"kind": "sample", "model": MODEL, "prompt": prompt, "n": 1, "stride": 300}))
    assert set(conn.scan_iter("dj:prompt:*")) - before == added


def test_cancel_a_running_job(client):
    job = client.post("/v1/jobs", json={"kind": "sample", "model": MODEL, "n": 8, "stride": 1}).json()
    wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running", 60, "the job to start")
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 202
    final = client.get(f"/v1/jobs/{job['id']}", params={"wait": 30}, timeout=60).json()
    assert final["status"] == "canceled"
    assert final["progress"] is None or final["progress"]["step"] < 1000


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"kind": "sample", "class_label": 3}, ["class_label"], "conditioned on text"),
        ({"kind": "img2img", "image": {"dataset": "mnist-5k", "index": 0}, "i_start": 34}, ["i_start"], "below 34"),
        (
            {"kind": "noise", "image": {"dataset": "mnist-5k", "index": 0}, "timesteps": [1000]},
            ["timesteps", 0],
            "1000",
        ),
    ],
)
def test_bad_input_is_refused_at_the_door(client, body, field, says):
    response = client.post("/v1/jobs", json={"model": MODEL, **body})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"][0]["loc"][-len(field) :] == field and says in error["message"]


def test_upsample_true_on_a_model_without_stage_two_is_refused(client):
    response = client.post("/v1/jobs", json={"kind": "sample", "model": "mnist-ddpm", "upsample": True})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"][-1] == "upsample"
    image = {"dataset": "mnist-5k", "index": 0}
    response = client.post("/v1/jobs", json={"kind": "upsample", "model": "mnist-ddpm", "image": image})
    assert response.status_code == 422
    assert "cannot run upsample (it runs anagram, " in response.json()["error"]["message"]


def test_precomputed_embeddings_give_the_encoders_pixels(
    client, api_key: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory, tiny_if: tuple[Path, Path, Path]
):
    stage1, stage2, embeds = tiny_if
    body = {"kind": "anagram", "model": MODEL, "prompts": [OLD_MAN, CAMPFIRE], "seed": 11}
    encoded = succeeded(submit(client, body))
    env = {"DEEPFLOYD_STAGE1": str(stage1), "DEEPFLOYD_STAGE2": str(stage2), "DEEPFLOYD_PROMPT_EMBEDS": str(embeds)}
    with if_stack(redis_url, tmp_path_factory.mktemp("embeds"), **env) as other, client_for(other, api_key) as c:
        from_file = succeeded(submit(c, body))
        assert artifact(c, from_file, "image_0.png") == artifact(client, encoded, "image_0.png")
        assert c.get(f"/v1/models/{MODEL}").json()["prompts"] == ["", OLD_MAN, CAMPFIRE]
        missing = c.post("/v1/jobs", json={**body, "prompts": [OLD_MAN, SKULL]})
        assert missing.status_code == 422, missing.text
        error = missing.json()["error"]
        assert error["details"][0]["loc"][-2:] == ["prompts", 1] and "precomputed embeddings" in error["message"]


def test_unconfigured_it_is_listed_unavailable_and_its_jobs_refused(
    api_key: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
):
    with running_stack(redis_url, tmp_path_factory.mktemp("bare"), workers=0) as bare, client_for(bare, api_key) as c:
        model = c.get(f"/v1/models/{MODEL}").json()
        assert not model["available"] and "DEEPFLOYD_STAGE1 is not set" in model["reason"]
        response = c.post("/v1/jobs", json={"kind": "sample", "model": MODEL, "prompt": PHOTO})
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["details"][0]["loc"][-1] == "model" and "DEEPFLOYD_STAGE1" in error["message"]


def test_weights_that_do_not_load_make_it_unavailable_with_the_workers_reason(
    api_key: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory, tiny_if: tuple[Path, Path, Path]
):
    broken = tmp_path_factory.mktemp("broken") / "IF-I"
    shutil.copytree(tiny_if[0], broken)
    (broken / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"not safetensors")
    with (
        if_stack(redis_url, tmp_path_factory.mktemp("broken-stack"), DEEPFLOYD_STAGE1=str(broken)) as s,
        client_for(s, api_key) as c,
    ):
        model = wait_until(
            lambda: (m := c.get(f"/v1/models/{MODEL}").json())["reason"] and m, 30, "the worker's verdict"
        )
        assert not model["available"] and "its worker could not load it" in model["reason"]
        response = c.post("/v1/jobs", json={"kind": "sample", "model": MODEL})
        assert response.status_code == 422 and "could not load" in response.json()["error"]["message"]


def hub_cache(root: Path, repo_id: str, folder: Path) -> Path:
    """A Hugging Face cache holding `folder` as `repo_id`'s main revision, as `hf download` leaves it."""
    commit = "0" * 40
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)
    return root


def test_a_hub_id_is_served_from_the_local_cache_without_a_download(
    api_key: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory, tiny_if: tuple[Path, Path, Path]
):
    cache = tmp_path_factory.mktemp("hf-cache")
    hub_cache(cache, "test-org/tiny-if-i", tiny_if[0])
    hub_cache(cache, "test-org/tiny-if-ii", tiny_if[1])
    env = {
        "DEEPFLOYD_STAGE1": "test-org/tiny-if-i",
        "DEEPFLOYD_STAGE2": "test-org/tiny-if-ii",
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
    }
    with if_stack(redis_url, tmp_path_factory.mktemp("hub"), **env) as s, client_for(s, api_key) as c:
        assert c.get(f"/v1/models/{MODEL}").json()["available"]
        job = succeeded(submit(c, {"kind": "sample", "model": MODEL, "prompt": PHOTO, "n": 1, "upsample": True}))
        assert size(c, job, "upsampled_0.png") == (STAGE2_SIZE, STAGE2_SIZE, 3)
    missing = {**env, "DEEPFLOYD_STAGE1": "test-org/not-cached"}
    with (
        running_stack(redis_url, tmp_path_factory.mktemp("hub-missing"), workers=0, **missing) as s,
        client_for(s, api_key) as c,
    ):
        reason = c.get(f"/v1/models/{MODEL}").json()["reason"]
    assert "test-org/not-cached is not a folder" in reason and "local Hugging Face cache" in reason


def test_an_api_that_cannot_see_the_weights_serves_what_its_workers_loaded(
    api_key: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory, tiny_if: tuple[Path, Path, Path]
):
    """As in Docker Compose, where only the workers mount the Hugging Face cache."""
    with running_stack(redis_url, tmp_path_factory.mktemp("split"), workers=0) as s, client_for(s, api_key) as c:
        assert not c.get(f"/v1/models/{MODEL}").json()["available"]
        s.env.update(DEEPFLOYD_STAGE1=str(tiny_if[0]), DEEPFLOYD_STAGE2=str(tiny_if[1]))
        s.start_worker("deepfloyd")
        s.wait_worker_ready()
        model = c.get(f"/v1/models/{MODEL}").json()
        assert model["available"] and model["image_size"] == STAGE1_SIZE and "upsample" in model["capabilities"]
        report_ttl = redis.Redis.from_url(s.env["REDIS_URL"]).ttl(f"dj:model-status:{MODEL}")
        assert 0 < report_ttl <= 120  # lives as long as the worker's registration, renewed by its heartbeats
        job = succeeded(submit(c, {"kind": "sample", "model": MODEL, "prompt": PHOTO, "n": 1, "stride": 100}))
        assert size(c, job, "image_0.png") == (STAGE1_SIZE, STAGE1_SIZE, 3)
