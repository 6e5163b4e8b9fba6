"""The web playground in a real browser: Debian's Chromium, headless, driven by Playwright, against the real API,
worker and Redis. Each test is its own tenant (its own key), as a person at the page would be."""

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from tests.helpers import TERMINAL, Stack, wait_until

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
log = logging.getLogger(__name__)
RUN_S = 120_000  # ms: a job on two shared CPU cores, end to end


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the `playwright` package (the dev extra)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("console", lambda m: log.info("browser console %s: %s", m.type, m.text))
    uncaught: list[str] = []
    page.on("pageerror", lambda e: uncaught.append(str(e)))
    page.goto(stack.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    yield page
    context.close()
    assert uncaught == [], "the page threw"


def enter_key(page: Any, key: str) -> None:
    page.fill("#api-key", key)
    page.press("#api-key", "Tab")  # `change`: stored, and the models are loaded with it


def choose(page: Any, model: str, kind: str) -> None:
    page.wait_for_selector(f"#model option[value='{model}']", state="attached")
    page.select_option("#model", model)
    page.select_option("#kind", kind)
    page.wait_for_selector("#fields [data-field]")


def snap(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True)
    log.info("screenshot: %s", path)
    return path


def fill(page: Any, fields: dict[str, str]) -> None:
    """Types each value into its field's text input."""
    for name, value in fields.items():
        page.fill(f"[data-field={name}] input", value)


def submit_and_finish(page: Any, client: Any) -> dict[str, Any]:
    """Sends the form and returns, from the API, the job the page shows ended."""
    page.click("#submit")
    return dict(client.get(f"/v1/jobs/{wait_for_end(page)}").json())


def wait_for_end(page: Any) -> str:
    """The page's job id once the page shows that the job ended."""
    page.wait_for_function(
        f"() => {sorted(TERMINAL)}.includes(document.querySelector('#job-status').dataset.status)", timeout=RUN_S
    )
    return str(page.get_attribute("#job-status", "data-job-id"))


def gallery_loaded(page: Any) -> list[dict[str, Any]]:
    """The gallery's images once the ended job's artifacts are all shown and each has loaded: name, natural size."""
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('#gallery img')];"
        " return document.querySelector('#gallery').dataset.complete === 'true'"
        " && imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }"
    )
    found: list[dict[str, Any]] = page.eval_on_selector_all(
        "#gallery figure",
        "figs => figs.map(f => ({name: f.dataset.artifact, width: f.querySelector('img')?.naturalWidth,"
        " href: f.querySelector('a').href}))",
    )
    return found


def job_count(stack: Stack) -> int:
    conn = redis.Redis.from_url(stack.env["REDIS_URL"])
    return sum(1 for _ in conn.scan_iter("rq:job:*"))


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float64) / 255


def test_the_page_and_its_modules_are_served_without_a_key(stack):
    page = httpx.get(stack.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    modules = ["main.js", "api.js", "schema_form.js", "stepping.js", "image_input.js", "watch.js", "gallery.js"]
    modules.append("loss_chart.js")
    for name in modules:
        served = httpx.get(f"{stack.url}/playground/{name}")
        assert served.status_code == 200, name
        assert served.headers["content-type"].startswith("text/javascript"), name  # module scripts need a JS type
    assert httpx.get(stack.url + "/playground/style.css").headers["content-type"].startswith("text/css")
    assert httpx.get(stack.url + "/playground/nothing.js").status_code == 404
    assert "/" not in httpx.get(stack.url + "/openapi.json").json()["paths"]  # not part of the API's contract


def test_a_sample_from_the_form_shows_progress_and_its_images(page, client, api_key, stack, tmp_path):
    enter_key(page, api_key)
    choose(page, "mnist-ddpm", "sample")
    fill(page, {"class_label": "7", "n": "2", "seed": "3"})
    page.click("#submit")
    page.wait_for_function("() => { const v = document.querySelector('#progress').value; return v > 0 && v < 1; }")
    job_id = wait_for_end(page)
    shown = gallery_loaded(page)
    snap(page, tmp_path, "sample")
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert job["params"]["class_label"] == 7 and job["params"]["n"] == 2 and job["params"]["seed"] == 3
    assert page.eval_on_selector("#progress", "p => p.value") == 1
    assert {f["name"] for f in shown} == {a["name"] for a in job["artifacts"]} >= {"image_0.png", "image_1.png"}
    assert next(f["width"] for f in shown if f["name"] == "image_0.png") == 28
    assert all(f["href"].startswith("blob:") for f in shown)  # fetched with the key, shown as object URLs
    if "/v1/jobs/{job_id}/events" in client.get("/openapi.json").json()["paths"]:
        assert page.eval_on_selector("#preview", "i => i.complete && i.naturalWidth") > 0


def sampler_options(page: Any) -> list[tuple[str, str]]:
    found = page.eval_on_selector_all("[data-field=sampler] option", "os => os.map(o => [o.value, o.textContent])")
    return [(value, text) for value, text in found]


def good_at(client: Any, model: str, sampler: str) -> str:
    """The hint's step range, as GET /v1/models lists it for this model."""
    [listed] = [m for m in client.get("/v1/models").json()["models"] if m["id"] == model]
    lo, hi = next(s for s in listed["samplers"] if s["name"] == sampler)["good_steps"]
    return f"good at {lo}-{hi} steps"


def test_the_sampler_choices_and_hint_follow_the_model_and_the_job_runs_the_one_picked(page, client, api_key, tmp_path):
    enter_key(page, api_key)
    hint = "#sampler-hint"
    choose(page, "mnist-denoiser", "denoise")
    assert page.is_hidden("[data-field=sampler]")  # a one-step denoiser runs no loop
    choose(page, "mnist-ddpm", "denoise")
    assert page.is_hidden("[data-field=sampler]")  # blur, the default method, runs no solver
    page.select_option("[data-field=method] select", "iterative")
    assert page.is_visible("[data-field=sampler]") and page.inner_text(hint).startswith("ddpm: ")
    choose(page, "mnist-flow", "sample")
    assert sampler_options(page) == [("", "euler (model default)"), ("heun", "heun"), ("midpoint", "midpoint"),
                                     ("ab2", "ab2")]  # fmt: skip
    assert page.inner_text(hint).startswith("euler: ") and good_at(client, "mnist-flow", "euler") in page.inner_text(
        hint
    )
    assert page.is_hidden("[data-field=eta]") and page.is_hidden("[data-field=spacing]")
    choose(page, "mnist-ddpm", "sample")
    offered = [value for value, _ in sampler_options(page)]
    assert offered == ["", "ddim", "dpmpp_2m", "dpmpp_sde", "unipc", "euler", "heun"]  # eps samplers, ddpm the default
    assert page.inner_text(hint).startswith("ddpm: ") and page.is_visible("[data-field=stride]")
    page.select_option("[data-field=sampler] select", "ddim")
    assert page.is_visible("[data-field=eta]") and page.is_visible("[data-field=spacing]")
    page.fill("[data-field=eta] input", "0.5")  # hidden below, so not sent
    page.select_option("[data-field=sampler] select", "dpmpp_2m")
    assert page.inner_text(hint).startswith("dpmpp_2m: ") and good_at(
        client, "mnist-ddpm", "dpmpp_2m"
    ) in page.inner_text(hint)
    assert page.is_hidden("[data-field=eta]") and page.is_visible("[data-field=spacing]")
    assert page.is_hidden("[data-field=stride]")
    page.fill("[data-field=steps] input", "3")
    assert page.get_attribute(hint, "data-outside") == "true" and "(3 is below that)" in page.inner_text(hint)
    order = page.eval_on_selector_all("#fields [data-field]:not([hidden])", "fs => fs.map(f => f.dataset.field)")
    assert order[order.index("sampler") :][:3] == ["sampler", "steps", "spacing"]  # the solver's fields together
    snap(page, tmp_path, "sampler")
    page.fill("[data-field=steps] input", "10")
    assert page.get_attribute(hint, "data-outside") == "false"
    fill(page, {"class_label": "3", "n": "1", "seed": "5"})
    job = submit_and_finish(page, client)
    assert job["status"] == "succeeded", job
    shown = gallery_loaded(page)
    assert job["params"]["sampler"] == "dpmpp_2m" and job["params"]["steps"] == 10
    assert job["params"].get("eta") is None
    assert next(f["width"] for f in shown if f["name"] == "image_0.png") == 28


def draw(page: Any, selector: str, strokes: list[list[tuple[float, float]]]) -> None:
    """Strokes in the canvas's own 0..1 coordinates, drawn with the mouse."""
    canvas = page.locator(selector)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=8)
        page.mouse.up()


def test_a_drawn_digit_and_mask_are_inpainted(page, client, api_key, tmp_path):
    enter_key(page, api_key)
    choose(page, "mnist-ddpm", "inpaint")
    draw(page, "[data-field=image] canvas", [[(0.5, 0.1), (0.5, 0.9)]])  # a "1": the middle column
    draw(page, "[data-field=mask] canvas", [[(0.05, 0.12), (0.95, 0.12)], [(0.05, 0.2), (0.95, 0.2)]])  # top rows
    fill(page, {"class_label": "1", "steps": "20", "seed": "0"})
    page.click("#submit")
    job_id = wait_for_end(page)
    shown = gallery_loaded(page)
    snap(page, tmp_path, "inpaint")
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert set(job["params"]["image"]) == {"upload_id"} and set(job["params"]["mask"]) == {"upload_id"}
    assert "image_0.png" in {f["name"] for f in shown}
    out = pixels(client.get(f"/v1/jobs/{job_id}/artifacts/image_0.png").content)  # (28, 28) in [0, 1]
    assert out.shape == (28, 28)
    kept = out[12:, :]  # below the mask: the drawing itself
    assert kept[:, 13:15].mean() > 0.7  # the stroke
    assert kept[:, :6].max() < 0.2 and kept[:, -6:].max() < 0.2  # the black around it


def test_a_bad_value_shows_the_apis_error_next_to_its_field(page, client, api_key):
    enter_key(page, api_key)
    choose(page, "mnist-ddpm", "sample")
    page.fill("[data-field=n] input", "0")
    page.click("#submit")
    error = page.wait_for_selector("[data-field=n] .error:not(:empty)").inner_text()
    assert error.startswith("n: ") and "greater than or equal to 1" in error
    assert page.get_attribute("[data-field=n]", "aria-invalid") == "true"
    assert client.get("/v1/jobs").json()["jobs"] == []


def test_a_wrong_key_shows_the_401_and_starts_no_job(page, client, api_key, stack):
    enter_key(page, api_key)
    choose(page, "mnist-ddpm", "sample")
    before = job_count(stack)
    enter_key(page, "not-a-key")
    refusal = httpx.get(stack.url + "/v1/models", headers={"Authorization": "Bearer not-a-key"})
    assert refusal.status_code == 401
    message = refusal.json()["error"]["message"]
    key_error = "[data-field=api_key] .error"
    assert page.wait_for_selector(f"{key_error}:not(:empty)").inner_text() == message
    page.click("#submit")  # the form is still there: the page sends what a client without the key would
    page.wait_for_function(f"() => document.querySelector('{key_error}').textContent.length > 0")
    assert page.inner_text(key_error) == message
    assert page.get_attribute("#job-status", "data-job-id") is None
    assert job_count(stack) == before
    assert page.evaluate("localStorage.getItem('diffusion-jobs.api-key')") == "not-a-key"


def test_a_train_job_draws_its_loss_curve(page, client, api_key, stack, tmp_path):
    stack.start_worker("train")
    enter_key(page, api_key)
    choose(page, "mnist-ddpm", "train")
    page.fill("[data-field=name] input", "playground-flow")
    page.fill("[data-field=dataset] input", "mnist-5k")
    page.select_option("[data-field=objective] select", "flow")
    fill(page, {"epochs": "2", "hidden": "8", "batch_size": "16", "limit": "640", "sample_steps": "2"})
    page.click("#submit")
    job_id = wait_for_end(page)
    snap(page, tmp_path, "train")
    job = wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json(), 5, "the job")
    assert job["status"] == "succeeded", job
    points = page.eval_on_selector("#loss-chart polyline", "p => p.getAttribute('points').split(' ').length")
    assert points >= 2
    assert "training loss:" in page.inner_text("#loss-caption")
