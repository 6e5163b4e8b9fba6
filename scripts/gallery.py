"""Make the gallery (docs/gallery.md) with a running service: every picture is a job's artifact, fetched over HTTP.

    make run                                      # in another terminal (or any deployment: --url, --key)
    .venv/bin/python scripts/gallery.py [--url http://127.0.0.1:8000] [--out docs/gallery]

Each figure is `<out>/<name>.png` (or `.gif`): the artifacts of one or more jobs side by side, scaled up 4x with
nearest-neighbour for the page (the service's own outputs are 28x28). `<out>/requests.json` holds the exact request
body of every job, by figure, and the job ids. The hand-drawn digit is `<out>/drawn-4.png`: strokes drawn with a
round pen on a 140x140 canvas, as a drawing app would record them, uploaded through `POST /v1/uploads`.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw, ImageSequence
from tqdm import tqdm

SCALE = 4  # nearest-neighbour upscaling of 28 px images for the page
PAD = 2  # pixels of the page's background between tiles, before scaling
ILLUSION = {"kind": "anagram", "model": "mnist-flow", "steps": 10}  # bench/illusions.py's setting (euler, gamma 5)
VIEW_PAIRS = {  # view: (upright, under the view), the view's best pair in bench/illusions.py (BENCHMARKS.md)
    "flip": ("5", "2"),
    "rotate_180": ("3", "8"),
    "rotate_cw": ("4", "2"),
    "rotate_ccw": ("2", "4"),
    "transpose": ("2", "4"),
    "skew": ("2", "4"),
    "patch_permute": ("5", "3"),
    "pixel_permute": ("3", "5"),
    "jigsaw": ("5", "7"),
    "inner_circle": ("0", "3"),
    "square_hinge": ("2", "0"),
}
ANIMATED = ("rotate_cw", "jigsaw", "inner_circle")  # views whose animation.gif the page shows
TRIPLES = [  # (views, prompts): each 3-view set's best triple in bench/illusions.py
    (["identity", "flip", "rotate_cw"], ["7", "2", "4"]),
    (["identity", "rotate_cw", "rotate_ccw"], ["4", "2", "3"]),
    (["identity", "rotate_180", "transpose"], ["5", "3", "0"]),
]
FACTORIZATIONS: list[dict[str, Any]] = [
    {"prompts": ["1", "8"]},
    {"prompts": ["0", "1", "8"]},
    {"prompts": ["1", "8"], "decomposition": "motion", "motion_length": 9},
    {"prompts": ["1", "8"], "decomposition": "motion", "motion_length": 9, "motion_angle": 45},
    {"prompts": ["1", "8"], "decomposition": "scale", "scale_factor": 4},
    {"prompts": ["8"], "image": {"dataset": "mnist-5k", "index": 3960}},
    {"prompts": ["8"], "image": {"dataset": "mnist-5k", "index": 3960}, "decomposition": "scale", "scale_factor": 4},
]
DRAWN_STROKES = [[(92, 18), (34, 88), (110, 88)], [(88, 40), (92, 128)]]  # a "4" in two strokes


def drawn_digit() -> bytes:
    """A digit drawn as a drawing app records it: white strokes of a round pen on black, 140x140 PNG."""
    image = Image.new("L", (140, 140), 0)
    pen = ImageDraw.Draw(image)
    for stroke in DRAWN_STROKES:
        pen.line(stroke, fill=255, width=14, joint="curve")
        for x, y in (stroke[0], stroke[-1]):
            pen.ellipse((x - 7, y - 7, x + 7, y + 7), fill=255)
    return png_bytes(image)


def half_mask(size: int = 28) -> bytes:
    """White (regenerate) bottom half, black (keep) top half."""
    image = Image.new("L", (size, size), 0)
    ImageDraw.Draw(image).rectangle((0, size // 2, size - 1, size - 1), fill=255)
    return png_bytes(image)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class Gallery:
    """Submits jobs, waits for them, fetches their artifacts and records every request."""

    def __init__(self, client: httpx.Client, out: Path) -> None:
        self.client = client
        self.out = out
        self.requests: dict[str, list[dict[str, Any]]] = {}

    def run(self, figure: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.client.post("/v1/jobs", json=body, headers={"Prefer": "wait=60"})
        answer.raise_for_status()
        job: dict[str, Any] = answer.json()
        while job["status"] in ("queued", "running"):
            job = self.client.get(f"/v1/jobs/{job['id']}", params={"wait": 60}).raise_for_status().json()
        if job["status"] != "succeeded":
            raise RuntimeError(f"{figure}: job {job['id']} ended {job['status']}: {job['error']}")
        self.requests.setdefault(figure, []).append({"job_id": job["id"], "request": body})
        return job

    def artifact(self, job: dict[str, Any], name: str) -> Image.Image:
        data = self.client.get(f"/v1/jobs/{job['id']}/artifacts/{name}").raise_for_status().content
        return Image.open(io.BytesIO(data))

    def reference(self, image: dict[str, Any]) -> Image.Image:
        """A dataset image as the service reads it: through a `noise` job at sigma 0."""
        job = self.run("references", {"kind": "noise", "model": "mnist-flow", "image": image, "sigmas": [0]})
        return self.artifact(job, "image_0.png")

    def upload(self, data: bytes) -> str:
        answer = self.client.post("/v1/uploads", content=data, headers={"Content-Type": "image/png"})
        upload_id: str = answer.raise_for_status().json()["id"]
        return upload_id

    def save(self, name: str, rows: list[list[Image.Image]]) -> None:
        """Tiles `rows` (each a list of images) into one PNG, scaled up for the page."""
        width = max(sum(im.width + PAD for im in row) for row in rows) + PAD
        height = sum(max(im.height for im in row) + PAD for row in rows) + PAD
        sheet = Image.new("L", (width, height), 64)
        y = PAD
        for row in rows:
            x = PAD
            for image in row:
                sheet.paste(image.convert("L"), (x, y))
                x += image.width + PAD
            y += max(im.height for im in row) + PAD
        sheet.resize((width * SCALE, height * SCALE), Image.Resampling.NEAREST).save(self.out / f"{name}.png")

    def save_gif(self, name: str, gif: Image.Image) -> None:
        frames = [
            f.convert("L").resize((f.width * SCALE, f.height * SCALE), Image.Resampling.NEAREST)
            for f in ImageSequence.Iterator(gif)
        ]
        durations = [f.info.get("duration", 80) for f in ImageSequence.Iterator(gif)]
        frames[0].save(self.out / f"{name}.gif", save_all=True, append_images=frames[1:], duration=durations, loop=0)


def images(gallery: Gallery, job: dict[str, Any], prefix: str = "image_") -> list[Image.Image]:
    names = sorted((a["name"] for a in job["artifacts"] if a["name"].startswith(prefix)), key=index_of)
    return [gallery.artifact(job, name) for name in names]


def index_of(name: str) -> int:
    return int(name.rsplit("_", 1)[1].split(".")[0])


def classes(g: Gallery) -> None:
    for model in ("mnist-ddpm", "mnist-flow"):
        rows = []
        for c in range(10):
            job = g.run(f"{model}-classes", {"kind": "sample", "model": model, "prompt": str(c), "n": 8, "seed": c})
            rows.append(images(g, job))
        g.save(f"{model}-classes", rows)


def interval(g: Gallery) -> None:
    """The classes figure of mnist-flow again, guided only at noise levels sigma <= 0.8 (`guidance_interval`)."""
    rows = []
    for c in range(10):
        body = {
            "kind": "sample",
            "model": "mnist-flow",
            "prompt": str(c),
            "n": 8,
            "seed": c,
            "guidance_interval": [0, 0.8],
        }
        rows.append(images(g, g.run("mnist-flow-interval", body)))
    g.save("mnist-flow-interval", rows)


def frames(g: Gallery) -> None:
    for model in ("mnist-ddpm", "mnist-flow"):
        body = {"kind": "sample", "model": model, "prompt": "3", "n": 4, "frames": True, "seed": 7}
        g.save_gif(f"{model}-frames", g.artifact(g.run(f"{model}-frames", body), "frames.gif"))


def inpaint(g: Gallery) -> None:
    mask = {"base64": base64.b64encode(half_mask()).decode()}
    rows = []
    for index, digit in ((3960, "7"), (4460, "8"), (2460, "4")):  # held out from training: the last 50 of a class
        image = {"dataset": "mnist-5k", "index": index}
        body = {"kind": "inpaint", "model": "mnist-flow", "image": image, "mask": mask, "n": 6, "seed": index}
        unguided, guided = g.run("inpaint", body), g.run("inpaint", {**body, "prompt": digit})
        original = g.run("inpaint", {"kind": "noise", "model": "mnist-flow", "image": image, "sigmas": [0]})
        rows.append([*images(g, original), Image.open(io.BytesIO(half_mask())), *images(g, unguided)])
        rows.append([*images(g, original), Image.open(io.BytesIO(half_mask())), *images(g, guided)])
    g.save("inpaint", rows)


def sdedit(g: Gallery) -> None:
    drawing = drawn_digit()
    (g.out / "drawn-4.png").write_bytes(drawing)
    upload = {"upload_id": g.upload(drawing)}
    rows = []
    for body in (
        {"model": "mnist-ddpm", "i_start": [100, 150, 200, 230, 250, 265, 280, 290]},  # of 300 steps: t = 299 - i
        {"model": "mnist-flow", "steps": 20, "i_start": [2, 4, 6, 8, 10, 12, 14, 16]},
    ):
        for prompt in (None, "4"):
            job = g.run("sdedit", {"kind": "img2img", **body, "image": upload, "prompt": prompt, "seed": 1})
            rows.append(images(g, job))
    g.save("sdedit", [[Image.open(io.BytesIO(drawing)).resize((28, 28), Image.Resampling.BILINEAR)], *rows])


def anagram(g: Gallery) -> None:
    rows = []
    for model in ("mnist-ddpm", "mnist-flow"):
        body = {"kind": "anagram", "model": model, "prompts": ["6", "9"], "view": "rotate_180", "n": 6, "seed": 3}
        job = g.run("anagram", body)
        rows.append([g.artifact(job, "view_0.png"), g.artifact(job, "view_1.png")])
    g.save("anagram", rows)


def hybrid(g: Gallery) -> None:
    rows = []
    for model in ("mnist-ddpm", "mnist-flow"):
        job = g.run("hybrid", {"kind": "hybrid", "model": model, "prompts": ["1", "8"], "n": 6, "seed": 5})
        rows.append(images(g, job))
    g.save("hybrid", rows)


def every_view(g: Gallery) -> None:
    """A row per view: the anagram upright, then under the view, for the view's best pair in bench/illusions.py."""
    rows = []
    for view, (upright, viewed) in VIEW_PAIRS.items():
        body = {**ILLUSION, "prompts": [upright, viewed], "view": view, "n": 4, "seed": 0}
        job = g.run("views", body)
        rows.append([g.artifact(job, "view_0.png"), g.artifact(job, "view_1.png")])
        if view in ANIMATED:
            g.save_gif(f"views-{view}", g.artifact(job, "animation.gif"))
    g.save("views", rows)


def three_views(g: Gallery) -> None:
    rows = []
    for views, prompts in TRIPLES:
        job = g.run("three-views", {**ILLUSION, "prompts": prompts, "views": views, "n": 4, "seed": 0})
        rows.append([g.artifact(job, f"view_{k}.png") for k in range(3)])
        g.save_gif(f"three-views-{'-'.join(views[1:])}", g.artifact(job, "animation.gif"))
    g.save("three-views", rows)


def factorized(g: Gallery) -> None:
    """A row per factorization of `hybrid` on mnist-flow, six samples each; the reference rows start with it."""
    rows = []
    for body in FACTORIZATIONS:
        job = g.run("factorized", {"kind": "hybrid", "model": "mnist-flow", "n": 6, "seed": 5, **body})
        reference = [g.reference(body["image"])] if "image" in body else []
        rows.append([*reference, *images(g, job)])
    g.save("factorized", rows)


FIGURES: dict[str, Callable[[Gallery], None]] = {
    "classes": classes,
    "interval": interval,
    "frames": frames,
    "inpaint": inpaint,
    "sdedit": sdedit,
    "anagram": anagram,
    "hybrid": hybrid,
    "views": every_view,
    "three-views": three_views,
    "factorized": factorized,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("DIFFUSION_JOBS_URL", "http://127.0.0.1:8000"))
    p.add_argument("--key", default=os.environ.get("DIFFUSION_JOBS_KEY"), help="API key, when the server wants one")
    p.add_argument("--out", type=Path, default=Path("docs/gallery"))
    p.add_argument("--only", nargs="+", choices=sorted(FIGURES), help="remake these figures only")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=90) as client:
        gallery = Gallery(client, args.out)
        for name in tqdm(args.only or list(FIGURES), unit="figure", file=sys.stderr):
            FIGURES[name](gallery)
    path = args.out / "requests.json"
    requests = json.loads(path.read_text()) if args.only and path.exists() else {}
    path.write_text(json.dumps({**requests, **gallery.requests}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
