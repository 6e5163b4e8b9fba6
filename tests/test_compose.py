"""Static checks of docker-compose.yml and the Dockerfile (no Docker engine needed)."""

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    assert "version" not in doc, "Compose spec files carry no `version:` key"
    svcs = doc["services"]
    assert isinstance(svcs, dict)
    return svcs


def _command(svc: dict[str, Any]) -> str:
    cmd = svc.get("command", "")
    return " ".join(str(part) for part in cmd) if isinstance(cmd, list) else str(cmd)


def _env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def test_three_services(services: dict[str, Any]) -> None:
    assert {"redis", "api", "worker"} <= set(services)


def test_redis_is_not_published(services: dict[str, Any]) -> None:
    assert "ports" not in services["redis"]


def test_redis_is_durable_and_password_protected(services: dict[str, Any]) -> None:
    cmd = _command(services["redis"])
    assert "--appendonly yes" in cmd
    assert "--maxmemory-policy noeviction" in cmd
    assert re.search(r"--requirepass \$\{REDIS_PASSWORD:\?", cmd), cmd
    assert any(str(v).endswith(":/data") for v in services["redis"].get("volumes", []))
    assert "healthcheck" in services["redis"]


def test_worker_reserves_an_nvidia_gpu(services: dict[str, Any]) -> None:
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) and d.get("count") == 1 for d in devices
    ), devices


def test_worker_can_be_scaled(services: dict[str, Any]) -> None:
    assert "container_name" not in services["worker"]
    assert "ports" not in services["worker"]


@pytest.mark.parametrize("name", ["api", "worker"])
def test_redis_url_carries_the_password(services: dict[str, Any], name: str) -> None:
    url = _env(services[name]).get("REDIS_URL", "")
    assert url.startswith("redis://"), url
    assert "${REDIS_PASSWORD" in url, url
    assert "@redis:6379" in url, url


def test_api_requires_keys_and_waits_for_redis(services: dict[str, Any]) -> None:
    api = services["api"]
    env = _env(api)
    assert env.get("HOST") == "0.0.0.0"
    assert env.get("API_KEYS", "").startswith("${API_KEYS:?"), env
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert api["build"]["target"] == "api"
    assert services["worker"]["build"]["target"] == "worker"


def test_dockerfile_defines_api_and_worker_targets() -> None:
    pattern = re.compile(r"^\s*FROM\s+\S+\s+AS\s+(\S+)\s*$", re.IGNORECASE | re.MULTILINE)
    stages = pattern.findall(DOCKERFILE.read_text())
    assert {"api", "worker"} <= {s.lower() for s in stages}, stages


# What the API's code imports, by the pip name that provides it (starlette comes with fastapi).
PROVIDED_BY = {
    "PIL": "pillow",
    "pydantic_settings": "pydantic-settings",
    "starlette": "fastapi",
    "prometheus_client": "prometheus-client",
    "pythonjsonlogger": "python-json-logger",
    "sse_starlette": "sse-starlette",
    "httpx_sse": "httpx-sse",
    "opentelemetry": "opentelemetry-api",
}
API_IMPORTS = """
import ast, sys
import service.app
import diffusion_jobs.client_cli  # the api image's `diffusion-jobs` builds the client commands' parsers too
names = set()
for name, module in list(sys.modules.items()):
    if name.split(".")[0] in ("core", "service", "models", "diffusion_jobs") and getattr(module, "__file__", None):
        for node in ast.walk(ast.parse(open(module.__file__).read())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
print(" ".join(sorted(n for n in names if n not in sys.stdlib_module_names)))
"""


def test_the_api_image_installs_everything_the_api_imports() -> None:
    """The api target installs its dependencies by hand (no torch): each third-party module that the API's own code
    imports must be among them."""
    out = subprocess.run([sys.executable, "-c", API_IMPORTS], capture_output=True, text=True, check=True, cwd=ROOT)
    imported = set(out.stdout.split()) - {"core", "service", "models", "diffusion_jobs"}
    stage = DOCKERFILE.read_text().split("AS api", 1)[1].split("COPY", 1)[0]
    installed = {re.split(r"[<>=\[]", spec)[0].lower() for spec in re.findall(r'"([^"]+)"', stage)}
    missing = {name for name in imported if PROVIDED_BY.get(name, name).lower() not in installed}
    assert not missing, f"the api image lacks {missing}"
    assert "torch" not in imported
