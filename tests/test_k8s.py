"""The k8s/ manifests, checked offline: the kustomization, the Kubernetes schemas, the
namespace, secrets, the pods' security context and resources, the probes, the order-service
Deployment and the Redis StatefulSet.

Nothing here talks to a cluster. kubernetes-validate checks every manifest against the
Kubernetes schemas in strict mode; the rest compares the manifests with the code and the
Dockerfile. Strict validation and the security check are also shown failing on a broken input.
The Deployment's environment is checked in test_k8s_env.py, the NetworkPolicies in
test_k8s_network.py, the benchmark Job's command in test_benchmark_job.py.
"""

from __future__ import annotations

import copy
import posixpath
import re
from typing import Any

import kubernetes_validate
import pytest

from .deploy_checks import (
    JOB_FILE,
    K8S,
    NAMESPACE,
    container,
    find,
    image_user,
    load_documents,
    load_job,
    load_manifests,
    load_stages,
    manifest_files,
    pod_labels,
    port_number,
    selects,
)

# Kubernetes versions whose schemas kubernetes-validate ships: the oldest we claim to support,
# and the newest this kubernetes-validate release knows.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    """Everything `kubectl apply -k k8s/` creates."""
    return load_manifests()


@pytest.fixture(scope="module")
def final() -> list[tuple[str, str]]:
    """The Dockerfile's final stage: the image the pods run."""
    return load_stages()[-1]


def test_kustomization_lists_exactly_the_manifests():
    kustomization = load_documents(K8S / "kustomization.yaml")[0]
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["namespace"] == NAMESPACE
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    for resource in resources:
        assert (K8S / resource).is_file(), f"{resource} is listed but missing"
    expected = {path.name for path in manifest_files()} - {JOB_FILE}
    assert set(resources) == expected
    assert JOB_FILE not in resources and (K8S / JOB_FILE).is_file()


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version):
    assert version in kubernetes_validate.utils.all_versions(), f"no schemas for {version}"
    checked = 0
    for path in manifest_files():
        for document in load_documents(path):
            label = f"{path.name}: {document.get('kind')}/{document['metadata'].get('name')}"
            try:
                validated = kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = ".".join(str(item) for item in error.path)
                pytest.fail(f"{label} at {where}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                pytest.fail(f"{label}: {error.message}")
            assert validated == version.rsplit(".", 1)[0]
            checked += 1
    assert checked >= 10


def test_strict_validation_rejects_an_unknown_field(manifests):
    deployment = copy.deepcopy(find(manifests, "Deployment", "order-service"))
    container(deployment)["readinesProbe"] = {"httpGet": {"path": "/readyz", "port": 8000}}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_everything_is_in_the_order_namespace(manifests):
    for document in [*manifests, load_job()]:
        if document["kind"] == "Namespace":
            assert document["metadata"]["name"] == NAMESPACE
        else:
            assert document["metadata"].get("namespace") == NAMESPACE, document["metadata"]


def test_no_secret_is_committed(manifests):
    assert not [m for m in manifests if m["kind"] == "Secret"], "the Secret must not be in git"
    for config_map in (m for m in manifests if m["kind"] == "ConfigMap"):
        assert not [key for key in config_map["data"] if "PASSWORD" in key.upper()]
    for workload in workloads(manifests):
        for spec in workload["spec"]["template"]["spec"]["containers"]:
            for entry in spec.get("env", []):
                if "PASSWORD" in entry["name"] or "AUTH" in entry["name"]:
                    assert "secretKeyRef" in entry.get("valueFrom", {}), entry["name"]


# --- Structure ------------------------------------------------------------------------------


def workloads(manifests: list[dict]) -> list[dict[str, Any]]:
    kinds = ("Deployment", "StatefulSet", "Job")
    return [m for m in [*manifests, load_job()] if m["kind"] in kinds]


def security_problems(workload: dict[str, Any]) -> list[str]:
    pod = workload["spec"]["template"]["spec"]
    pod_context = pod.get("securityContext", {})
    problems = []
    for spec in pod["containers"] + pod.get("initContainers", []):
        context = {**pod_context, **spec.get("securityContext", {})}
        where = f"{workload['kind']}/{workload['metadata']['name']}/{spec['name']}"
        expected = {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                    "allowPrivilegeEscalation": False}
        for key, value in expected.items():
            if context.get(key) is not value:
                problems.append(f"{where}: {key} is not {value}")
        if context.get("runAsUser") == 0:
            problems.append(f"{where}: runs as uid 0")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            problems.append(f"{where}: capabilities not all dropped")
        if context.get("capabilities", {}).get("add"):
            problems.append(f"{where}: adds capabilities")
        if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile is not RuntimeDefault")
    return problems


def test_every_container_is_locked_down(manifests):
    for workload in workloads(manifests):
        assert security_problems(workload) == []


def test_security_check_reports_a_weakened_container(manifests):
    deployment = copy.deepcopy(find(manifests, "Deployment", "order-service"))
    context = container(deployment)["securityContext"]
    context["readOnlyRootFilesystem"] = False
    context["capabilities"] = {"drop": ["NET_RAW"]}
    assert security_problems(deployment) == [
        "Deployment/order-service/order-service: readOnlyRootFilesystem is not True",
        "Deployment/order-service/order-service: capabilities not all dropped",
    ]


def test_pods_run_as_the_images_user(manifests, final):
    uid = int(image_user(final).split(":")[0])
    for workload in (find(manifests, "Deployment", "order-service"), load_job()):
        assert workload["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid


def quantity(value: str | int) -> float:
    text = str(value)
    for suffix, factor in (("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30), ("m", 1e-3),
                           ("k", 1e3), ("M", 1e6), ("G", 1e9)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def assert_requests_and_limits(workload: dict[str, Any]) -> None:
    """Every container asks for CPU and memory and is capped, the cap no lower than the ask."""
    for spec in workload["spec"]["template"]["spec"]["containers"]:
        resources = spec.get("resources", {})
        for resource in ("cpu", "memory"):
            request = resources.get("requests", {}).get(resource)
            limit = resources.get("limits", {}).get(resource)
            assert request and limit, f"{spec['name']}: {resource} request and limit"
            assert quantity(request) <= quantity(limit)


def test_every_container_has_requests_and_limits(manifests):
    for workload in workloads(manifests):
        assert_requests_and_limits(workload)


def test_probes_hit_the_apps_routes(manifests):
    from service import create_app

    app = create_app({"redis_url": "redis://127.0.0.1:1/0", "replica_id": "probe-check"})
    get_routes = {rule.rule for rule in app.url_map.iter_rules() if "GET" in rule.methods}
    spec = container(find(manifests, "Deployment", "order-service"))
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        http = spec[probe]["httpGet"]
        assert http["path"] == path and path in get_routes
        assert port_number(spec, http["port"]) == port_number(spec, "http")


def test_order_service_deployment(manifests):
    deployment = find(manifests, "Deployment", "order-service")
    assert deployment["spec"]["replicas"] == 3
    selector = deployment["spec"]["selector"]
    assert selects(selector, pod_labels(deployment))
    images = {container(w)["image"] for w in (deployment, load_job())}
    assert len(images) == 1, f"the Job and the Deployment run different images: {images}"
    assert not images.pop().endswith(":latest")
    service = find(manifests, "Service", "order-service")
    assert selects(service["spec"]["selector"], pod_labels(deployment))
    assert port_number(container(deployment), service["spec"]["ports"][0]["targetPort"])
    budget = find(manifests, "PodDisruptionBudget", "order-service")
    assert budget["spec"]["selector"] == selector
    assert 1 <= budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    for constraint in deployment["spec"]["template"]["spec"].get("topologySpreadConstraints",
                                                                   []):
        assert selects(constraint["labelSelector"], pod_labels(deployment))


def redis_config(manifests: list[dict]) -> dict[str, str]:
    """The redis.conf that the StatefulSet's command reads, from the mounted ConfigMap."""
    redis = find(manifests, "StatefulSet", "redis")
    spec = container(redis)
    config_path = next(arg for arg in [*spec.get("command", []), *spec["args"]]
                       if arg.endswith(".conf"))
    mount = next(m for m in spec["volumeMounts"]
                 if config_path.startswith(m["mountPath"].rstrip("/") + "/"))
    volume = next(v for v in redis["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == mount["name"])
    data = find(manifests, "ConfigMap", volume["configMap"]["name"])["data"]
    text = data[posixpath.relpath(config_path, mount["mountPath"])]
    settings = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            settings[key.lower()] = value.strip()
    return settings


def test_redis_statefulset(manifests):
    redis = find(manifests, "StatefulSet", "redis")
    spec = container(redis)
    assert redis["spec"]["replicas"] == 1
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+(-[a-z0-9.]+)?", spec["image"]), spec["image"]
    config = redis_config(manifests)
    assert config["appendonly"] == "yes"
    assert "requirepass" not in config
    assert spec["args"][spec["args"].index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    env = {entry["name"]: entry for entry in spec["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redis",
                                                                  "key": "password"}
    assert spec["readinessProbe"] and spec["livenessProbe"]
    # The data directory is the volume claimed per pod.
    claims = {t["metadata"]["name"]: t for t in redis["spec"]["volumeClaimTemplates"]}
    data_mount = next(m for m in spec["volumeMounts"] if m["mountPath"] == config["dir"])
    claim = claims[data_mount["name"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert quantity(claim["spec"]["resources"]["requests"]["storage"]) > 0
    service = find(manifests, "Service", redis["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert selects(service["spec"]["selector"], pod_labels(redis))
    assert selects(redis["spec"]["selector"], pod_labels(redis))
