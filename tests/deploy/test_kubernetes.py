"""Static checks of the Kustomize tree deploy/kubernetes (docs/operations/kubernetes.md); no cluster needed.

The tree is rendered here in Python (the kustomization's `namespace`, `resources` and `images`, all it uses), so the
checks run where kubectl is absent; where kubectl is present, its rendering must give the same objects.
Core objects are validated against the Kubernetes 1.30 JSON schemas that `kubernetes-validate` ships (strict: an
unknown field fails), KEDA's against deploy/kubernetes/schemas/keda.schema.json.
"""

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from core.queues import QUEUES, pool_queues
from core.settings import Settings
from service.app import create_app

ROOT = Path(__file__).resolve().parents[2]
TREE = ROOT / "deploy" / "kubernetes"
KEDA_SCHEMA = TREE / "schemas" / "keda.schema.json"
K8S_VERSION = "1.30"
KEDA_API = "keda.sh/v1alpha1"
CLUSTER_SCOPED = {"Namespace"}
RENDERED_KEYS = {"apiVersion", "kind", "namespace", "resources", "images"}  # what render() implements
Obj = dict[str, Any]


def kustomization() -> Obj:
    doc = yaml.safe_load((TREE / "kustomization.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def pod_templates(obj: Obj) -> Iterator[Obj]:
    if obj["kind"] in {"Deployment", "StatefulSet"}:
        yield obj["spec"]["template"]["spec"]


def containers(obj: Obj) -> Iterator[Obj]:
    for pod in pod_templates(obj):
        yield from pod.get("initContainers", [])
        yield from pod["containers"]


def render() -> list[Obj]:
    """What `kubectl kustomize deploy/kubernetes` gives for this tree."""
    kust = kustomization()
    namespace = kust.get("namespace")
    images = {i["name"]: f"{i.get('newName', i['name'])}:{i['newTag']}" for i in kust.get("images", [])}
    objects = []
    for resource in kust["resources"]:
        for doc in yaml.safe_load_all((TREE / resource).read_text()):
            if doc is None:
                continue
            if namespace and doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = namespace
            for container in containers(doc):
                container["image"] = images.get(container["image"], container["image"])
            objects.append(doc)
    return objects


OBJECTS = render()
CORE = [o for o in OBJECTS if o["apiVersion"] != KEDA_API]
KEDA = [o for o in OBJECTS if o["apiVersion"] == KEDA_API]


def ident(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def of_kind(kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in OBJECTS if o["kind"] == kind}


def worker_pool(deployment: Obj) -> str | None:
    """The POOL of a `diffusion-jobs worker --queue POOL` container; None for a Deployment that is no worker."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    argv = [*container.get("command", []), *container.get("args", [])]
    if argv[:2] != ["diffusion-jobs", "worker"]:
        return None
    assert argv.count("--queue") == 1, argv
    return str(argv[argv.index("--queue") + 1])


WORKERS = {name: pool for name, d in of_kind("Deployment").items() if (pool := worker_pool(d)) is not None}


def test_the_python_rendering_covers_the_kustomization() -> None:
    """render() implements these fields only: a new kind of field (patches, generators) must be added to it."""
    kust = kustomization()
    assert set(kust) <= RENDERED_KEYS, set(kust) - RENDERED_KEYS
    for resource in kust["resources"]:
        assert (TREE / resource).is_file(), f"{resource}: render() reads files, not folders or remote bases"
    names = [(o["kind"], o["metadata"]["name"]) for o in OBJECTS]
    assert len(names) == len(set(names)), "two objects of one kind share a name"


@pytest.mark.parametrize("obj", CORE, ids=ident)
def test_core_manifest_matches_the_kubernetes_schema(obj: Obj) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def deployment_without_selector() -> Obj:
    broken = copy.deepcopy(of_kind("Deployment")["api"])
    del broken["spec"]["selector"]
    return broken


def deployment_with_a_typo() -> Obj:
    broken = copy.deepcopy(of_kind("Deployment")["worker-train"])
    spec = broken["spec"]["template"]["spec"]
    spec["terminationGracePeriod"] = spec.pop("terminationGracePeriodSeconds")
    return broken


@pytest.mark.parametrize("broken", [deployment_without_selector(), deployment_with_a_typo()], ids=["selector", "typo"])
def test_a_broken_manifest_fails_validation(broken: Obj) -> None:
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.fixture(scope="module")
def keda_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(KEDA_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_tree_has_keda_objects() -> None:
    assert {o["kind"] for o in KEDA} == {"ScaledObject", "TriggerAuthentication"}


@pytest.mark.parametrize("obj", KEDA, ids=ident)
def test_keda_object_matches_the_schema(obj: Obj, keda_validator: jsonschema.Draft202012Validator) -> None:
    keda_validator.validate(obj)


def scaled_object(edit: str) -> Obj:
    broken = copy.deepcopy(of_kind("ScaledObject")["worker-mnist"])
    trigger = broken["spec"]["triggers"][0]
    if edit == "unquoted listLength":
        trigger["metadata"]["listLength"] = 16
    elif edit == "no listName":
        del trigger["metadata"]["listName"]
    elif edit == "no address":
        del trigger["metadata"]["address"]
    elif edit == "unknown field":
        broken["spec"]["minReplicas"] = broken["spec"].pop("minReplicaCount")
    elif edit == "no target":
        del broken["spec"]["scaleTargetRef"]["name"]
    return broken


@pytest.mark.parametrize("edit", ["unquoted listLength", "no listName", "no address", "unknown field", "no target"])
def test_the_keda_schema_rejects_a_broken_scaled_object(
    edit: str, keda_validator: jsonschema.Draft202012Validator
) -> None:
    with pytest.raises(jsonschema.ValidationError):
        keda_validator.validate(scaled_object(edit))


def test_every_pool_has_one_worker_deployment() -> None:
    assert sorted(WORKERS.values()) == sorted(QUEUES), WORKERS
    assert set(WORKERS) == {f"worker-{pool}" for pool in QUEUES}


def test_every_scaled_object_targets_a_worker_deployment_of_the_tree() -> None:
    scaled = of_kind("ScaledObject")
    targets = []
    for obj in scaled.values():
        ref = obj["spec"]["scaleTargetRef"]
        assert ref.get("apiVersion", "apps/v1") == "apps/v1" and ref.get("kind", "Deployment") == "Deployment"
        targets.append(ref["name"])
    assert sorted(targets) == sorted(WORKERS), "one ScaledObject per worker Deployment, and only those"


@pytest.mark.parametrize("name", sorted(of_kind("ScaledObject")))
def test_the_triggers_watch_exactly_the_queues_the_worker_listens_on(name: str) -> None:
    spec = of_kind("ScaledObject")[name]["spec"]
    pool = WORKERS[spec["scaleTargetRef"]["name"]]
    watched = [t["metadata"]["listName"] for t in spec["triggers"]]
    assert all(t["type"] == "redis" for t in spec["triggers"])
    assert sorted(watched) == sorted(f"rq:queue:{queue}" for queue in pool_queues(pool))


@pytest.mark.parametrize("name", sorted(of_kind("ScaledObject")))
def test_the_formula_sums_every_trigger(name: str) -> None:
    spec = of_kind("ScaledObject")[name]["spec"]
    formula = spec["advanced"]["scalingModifiers"]["formula"]
    names = [t["name"] for t in spec["triggers"]]
    assert re.fullmatch(r"\s*\w+(\s*\+\s*\w+)*\s*", formula), formula
    assert sorted(re.findall(r"\w+", formula)) == sorted(names)
    target = spec["advanced"]["scalingModifiers"]["target"]
    assert {t["metadata"]["listLength"] for t in spec["triggers"]} == {target}


def test_keda_reaches_the_redis_service_with_the_secret_password() -> None:
    namespace = kustomization()["namespace"]
    service = of_kind("Service")["redis"]
    ports = {p["port"] for p in service["spec"]["ports"]}
    auths = of_kind("TriggerAuthentication")
    secrets = of_kind("Secret")
    for obj in of_kind("ScaledObject").values():
        for trigger in obj["spec"]["triggers"]:
            host, port = trigger["metadata"]["address"].rsplit(":", 1)
            assert host == f"redis.{namespace}.svc.cluster.local", host
            assert int(port) in ports
            auth = auths[trigger["authenticationRef"]["name"]]
            refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
            assert refs["password"]["key"] == "REDIS_PASSWORD"
            assert refs["password"]["key"] in secrets[refs["password"]["name"]]["stringData"]


def test_one_worker_stays_for_the_api_readiness() -> None:
    """GET /readyz answers 503 while no worker is alive (service/routes/health.py): with every pool at zero no API pod
    would be ready, so no job could be submitted to wake a pool."""
    minimums = {
        o["spec"]["scaleTargetRef"]["name"]: o["spec"].get("minReplicaCount", 0)
        for o in KEDA
        if "triggers" in o["spec"]
    }
    assert max(minimums.values()) >= 1, minimums
    assert minimums["worker-mnist"] == 0 and minimums["worker-deepfloyd"] == 0, "queued jobs wake these pools"
    for obj in of_kind("ScaledObject").values():
        assert obj["spec"].get("minReplicaCount", 0) <= obj["spec"]["maxReplicaCount"]


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_a_worker_has_one_gpu_and_a_grace_period_for_its_job(name: str) -> None:
    deployment = of_kind("Deployment")[name]
    assert "replicas" not in deployment["spec"], "KEDA sets the replicas; `kubectl apply` must not reset them"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0, "a surge pod would wait for a GPU"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    (image,) = (i for i in kustomization()["images"] if i["name"] == "diffusion-jobs-worker")
    assert container["image"] == f"{image['newName']}:{image['newTag']}", "the Dockerfile's worker target"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= 600, "a warm shutdown finishes the job in hand: the grace must outlast a job, not 30 s"


def test_the_train_pool_waits_longest() -> None:
    grace = {
        pool: of_kind("Deployment")[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        for name, pool in WORKERS.items()
    }
    assert grace["train"] > max(g for pool, g in grace.items() if pool != "train"), grace


def test_the_api_probes_are_routes_of_the_app() -> None:
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"))
    routes = set(app.openapi()["paths"])  # the app's routes (FastAPI includes routers lazily; the schema lists all)
    deployment = of_kind("Deployment")["api"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in routes, f"{probe}: {get['path']} is no route of service.app"
        assert get["port"] in ports
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["command"] == ["diffusion-jobs", "api"]
    assert env["HOST"] == "0.0.0.0" and int(env["PORT"]) == ports["http"] == 8000
    assert "EXPOSE 8000" in (ROOT / "Dockerfile").read_text()
    service = of_kind("Service")["api"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    pdb = of_kind("PodDisruptionBudget")["api"]
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"], "the PDB would block every eviction"


def secret_refs(obj: Obj) -> Iterator[tuple[str, str]]:
    for container in containers(obj):
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                yield ref["name"], ref["key"]


@pytest.mark.parametrize("obj", [o for o in CORE if list(pod_templates(o))], ids=ident)
def test_every_secret_key_the_pods_read_is_in_the_secret(obj: Obj) -> None:
    secrets = of_kind("Secret")
    for name, key in secret_refs(obj):
        assert key in secrets[name]["stringData"], f"{ident(obj)} reads {name}/{key}"


@pytest.mark.parametrize("obj", [o for o in CORE if list(pod_templates(o))], ids=ident)
def test_env_references_are_defined_before_use(obj: Obj) -> None:
    """Kubernetes expands $(NAME) only from variables defined earlier in the same container (else it stays literal)."""
    for container in containers(obj):
        defined: set[str] = set()
        for env in container.get("env", []):
            for name in re.findall(r"\$\((\w+)\)", env.get("value", "")):
                assert name in defined, f"{ident(obj)}: {env['name']} uses $({name}) before it is defined"
            defined.add(env["name"])


@pytest.mark.parametrize("name", ["api", *sorted(WORKERS)])
def test_the_app_pods_reach_redis_with_the_password(name: str) -> None:
    (container,) = of_kind("Deployment")[name]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "REDIS_PASSWORD"
    assert env["REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@redis:6379/0"


def test_the_api_reads_every_key_setting_from_the_secret() -> None:
    refs = {key for _, key in secret_refs(of_kind("Deployment")["api"])}
    assert {"API_KEYS", "WEBHOOK_SECRET", "ADMIN_KEYS", "HIGH_PRIORITY_KEYS", "REDIS_PASSWORD"} <= refs


def test_redis_is_durable_and_password_protected() -> None:
    statefulset = of_kind("StatefulSet")["redis"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    script = " ".join([*container["command"], *container["args"]])
    for flag in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert flag in script
    assert '--requirepass "$REDIS_PASSWORD"' in script
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]
    assert statefulset["spec"]["serviceName"] in of_kind("Service")
    assert next(secret_refs(statefulset)) == ("diffusion-jobs", "REDIS_PASSWORD")


def test_the_secret_ships_no_real_values() -> None:
    """The example Secret must be filled in by the operator: with REDIS_PASSWORD and API_KEYS empty, Redis and the
    API refuse to start rather than run open."""
    data = of_kind("Secret")["diffusion-jobs"]["stringData"]
    assert all(value == "" for value in data.values()), data


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_renders_the_same_objects() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(TREE)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    theirs = [doc for doc in yaml.safe_load_all(out) if doc is not None]

    def key(obj: Obj) -> tuple[str, str, str, str]:
        return obj["apiVersion"], obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]

    assert sorted(map(key, theirs)) == sorted(map(key, OBJECTS))
    ours = {key(o): o for o in OBJECTS}
    for obj in theirs:
        assert obj == ours[key(obj)], f"{ident(obj)} differs from the Python rendering"
