"""The samplers (ODE/SDE solvers) a sampling job may choose, described without torch: which model family each runs
on, what it takes, and the step counts it does well at (the playground's hint, GET /v1/models' `samplers`).

A noise-prediction ("eps") model is mnist-ddpm or DeepFloyd IF; a flow model predicts a velocity (mnist-flow). The
numerics live in models/solvers.py; what each name runs is documented in docs/api.md, "Samplers".
"""

from dataclasses import dataclass
from typing import Literal

Sampler = Literal["ddpm", "ddim", "dpmpp_2m", "dpmpp_sde", "unipc", "euler", "heun", "midpoint", "ab2"]
Spacing = Literal["leading", "trailing", "linspace"]
Family = Literal["eps", "flow"]


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    summary: str
    good_steps: tuple[int, int]  # the step counts it does well at (a hint, not a rule)
    default_steps: int  # when a job names the sampler and neither steps nor stride
    min_steps: int = 1  # fewer cannot work (a second-order step needs two times)
    eta: bool = False  # takes `eta`
    spacing: bool = False  # takes `spacing`
    stride: bool = False  # takes `stride`

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "summary": self.summary,
            "good_steps": list(self.good_steps),
            "default_steps": self.default_steps,
            "min_steps": self.min_steps,
            "takes": [
                name for name, on in (("eta", self.eta), ("spacing", self.spacing), ("stride", self.stride)) if on
            ],
        }


EPS: dict[str, SamplerInfo] = {
    s.name: s
    for s in (
        SamplerInfo(
            "ddpm", "ancestral DDPM (the course's loop), stochastic", (100, 1000), 300, spacing=True, stride=True
        ),
        SamplerInfo("ddim", "DDIM; eta 0 deterministic, eta 1 ancestral", (20, 100), 50, eta=True, spacing=True),
        SamplerInfo("dpmpp_2m", "DPM-Solver++(2M), deterministic multistep", (10, 25), 20, spacing=True),
        SamplerInfo("dpmpp_sde", "DPM-Solver++(2M) SDE, stochastic multistep", (15, 40), 25, spacing=True),
        SamplerInfo("unipc", "UniPC (bh2), deterministic predictor-corrector", (8, 20), 15, spacing=True),
        SamplerInfo("euler", "Euler on Karras sigmas (k-diffusion), deterministic", (20, 60), 30),
        SamplerInfo("heun", "Heun on Karras sigmas, 2 network calls a step", (10, 30), 20, min_steps=2),
    )
}
FLOW: dict[str, SamplerInfo] = {
    s.name: s
    for s in (
        SamplerInfo("euler", "Euler steps (the course's flow loop)", (20, 100), 50),
        SamplerInfo("heun", "Heun (trapezoid), 2 network calls a step", (8, 30), 20, min_steps=2),
        SamplerInfo("midpoint", "explicit midpoint, 2 network calls a step", (8, 30), 20, min_steps=2),
        SamplerInfo("ab2", "Adams-Bashforth 2, multistep: one network call a step", (10, 50), 25),
    )
}


def family(is_flow: bool) -> Family:
    return "flow" if is_flow else "eps"


def table(is_flow: bool) -> dict[str, SamplerInfo]:
    return FLOW if is_flow else EPS


def default_sampler(is_flow: bool) -> str:
    """Today's loop: Euler for flow models, ancestral DDPM for the rest."""
    return "euler" if is_flow else "ddpm"
