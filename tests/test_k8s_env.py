"""The environment, checked offline: which variables the service reads (derived from the code:
Settings' fields and gunicorn.conf.py), and what the order-service Deployment gives its pods:
only variables the service reads, the secrets from Secrets, and values that Settings and
gunicorn.conf.py turn into the right Redis address, port, heartbeat and metrics directories.
The environment check is also shown failing on a broken Deployment.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlsplit

import pytest

from service.config import Settings

from .deploy_checks import (
    container,
    environ_reads,
    find,
    gunicorn_config,
    gunicorn_variables,
    load_manifests,
    load_stages,
    port_number,
    service_variables,
    settings_variables,
    stage_env,
    unread,
)


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    """Everything `kubectl apply -k k8s/` creates."""
    return load_manifests()


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    return load_stages()


# --- What the service reads ------------------------------------------------------------------


def test_environ_reads_finds_each_form_and_flags_the_rest():
    source = (
        "import os\n"
        "a = os.environ.get('A', '1')\n"
        "b = os.environ['B']\n"
        "c = os.getenv('C')\n"
        "d = os.environ.get(prefix + 'D')\n"
        "e = {k: v for k, v in os.environ.items()}\n"
    )
    names, unknown = environ_reads(source)
    assert names == {"A", "B", "C"}
    assert len(unknown) == 2


def test_variables_are_derived_from_the_code():
    gunicorn = gunicorn_variables()
    assert {"PORT", "HOST", "GUNICORN_GRACEFUL_TIMEOUT", "GUNICORN_WORKER_TMP_DIR"} <= gunicorn
    settings = settings_variables()
    assert {"REDIS_URL", "REDIS_PASSWORD", "REPLICA_ID"} <= settings


def test_settings_read_exactly_the_upper_cased_fields():
    """The derivation above is what from_env does: it looks up each field's name, upper-cased."""

    class Recording(dict):
        def __init__(self) -> None:
            super().__init__()
            self.asked: set[str] = set()

        def get(self, key, default=None):
            self.asked.add(key)
            return super().get(key, default)

        def __getitem__(self, key):
            self.asked.add(key)
            return super().__getitem__(key)

    environ = Recording()
    Settings.from_env(environ, replica_id="x")
    assert environ.asked == settings_variables()


# --- The order-service Deployment's environment ----------------------------------------------


def pod_environment(manifests: list[dict], workload: dict[str, Any],
                    container_name: str) -> dict[str, dict[str, Any]]:
    """Each variable a container gets from the manifests -> its source (envFrom, then env)."""
    spec = container(workload, container_name)
    environment: dict[str, dict[str, Any]] = {}
    for source in spec.get("envFrom", []):
        assert "configMapRef" in source, f"envFrom {source}: its keys cannot be checked here"
        config_map = find(manifests, "ConfigMap", source["configMapRef"]["name"])
        prefix = source.get("prefix", "")
        for key, value in config_map.get("data", {}).items():
            environment[prefix + key] = {"value": value, "from": config_map["metadata"]["name"]}
    for entry in spec.get("env", []):
        environment[entry["name"]] = entry
    return environment


def environment_problems(manifests: list[dict]) -> list[str]:
    """What is wrong with the variables the order-service pods get."""
    deployment = find(manifests, "Deployment", "order-service")
    environment = pod_environment(manifests, deployment, "order-service")
    problems = [f"{name} is set but nothing reads it"
                for name in unread(environment, service_variables())]
    for name in ("REDIS_URL", "REDIS_PASSWORD", "REPLICA_ID"):
        if name not in environment:
            problems.append(f"{name} is not set")
    password = environment.get("REDIS_PASSWORD", {})
    if password.get("valueFrom", {}).get("secretKeyRef") != {"name": "redis", "key": "password"}:
        problems.append("REDIS_PASSWORD does not come from the Secret redis, key password")
    replica = environment.get("REPLICA_ID", {})
    if replica.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        problems.append("REPLICA_ID is not the pod's name")
    url = environment.get("REDIS_URL", {}).get("value", "")
    if urlsplit(url).password or urlsplit(url).username:
        problems.append("REDIS_URL carries credentials")
    token = environment.get("ADMIN_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
    if token != {"name": "order-service", "key": "admin-token"}:
        problems.append("ADMIN_TOKEN does not come from the Secret order-service")
    return problems


def test_deployment_sets_only_variables_the_service_reads(manifests):
    assert environment_problems(manifests) == []


def test_environment_check_reports_what_is_wrong(manifests):
    broken = copy.deepcopy(manifests)
    find(broken, "ConfigMap", "order-service")["data"]["ORDER_STRATEGIE"] = "lock"
    env = container(find(broken, "Deployment", "order-service"))["env"]
    env[:] = [entry for entry in env if entry["name"] not in ("REPLICA_ID", "ADMIN_TOKEN")]
    env.append({"name": "REDIS_URL", "value": "redis://:hunter2@redis-0.redis:6379/0"})
    assert environment_problems(broken) == [
        "ORDER_STRATEGIE is set but nothing reads it",
        "REPLICA_ID is not set",
        "REPLICA_ID is not the pod's name",
        "REDIS_URL carries credentials",
        "ADMIN_TOKEN does not come from the Secret order-service",
    ]


def resolved_environment(manifests: list[dict], stages) -> dict[str, str]:
    """What the order-service process sees: the image's ENV, then the pod's variables, with a
    stand-in for the Secret and the pod name."""
    deployment = find(manifests, "Deployment", "order-service")
    env = dict(stage_env(stages[-1]))
    for name, source in pod_environment(manifests, deployment, "order-service").items():
        if "value" in source:
            env[name] = str(source["value"])
        elif "secretKeyRef" in source.get("valueFrom", {}):
            env[name] = "s3cret-from-the-secret"
        elif "fieldRef" in source.get("valueFrom", {}):
            env[name] = "order-service-5d8f7b6c9-x2x7q"
    return env


def test_settings_load_from_the_deployments_environment(manifests, stages):
    env = resolved_environment(manifests, stages)
    settings = Settings.from_env(env)
    assert settings.redis_password == "s3cret-from-the-secret"
    assert settings.replica_id == "order-service-5d8f7b6c9-x2x7q"
    redis = find(manifests, "StatefulSet", "redis")
    service = find(manifests, "Service", redis["spec"]["serviceName"])
    url = urlsplit(settings.redis_url)
    name, namespace = redis["metadata"]["name"], redis["metadata"]["namespace"]
    pod_host = f"{name}-0.{service['metadata']['name']}"
    assert url.hostname in {pod_host, f"{pod_host}.{namespace}",
                            f"{pod_host}.{namespace}.svc.cluster.local"}
    assert url.port == service["spec"]["ports"][0]["port"] == port_number(container(redis),
                                                                          "redis")


def test_gunicorn_in_the_pod_binds_the_container_port_and_drains_in_time(manifests, stages):
    deployment = find(manifests, "Deployment", "order-service")
    spec = container(deployment)
    pod = deployment["spec"]["template"]["spec"]
    config = gunicorn_config(resolved_environment(manifests, stages))
    assert int(config["bind"].rsplit(":", 1)[1]) == port_number(spec, "http")
    # The heartbeat directory is a memory-backed emptyDir (the root file system is read-only).
    mounts = {m["mountPath"]: m["name"] for m in spec.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    tmp_dir = config["worker_tmp_dir"]
    assert tmp_dir in mounts, f"worker_tmp_dir {tmp_dir} is not a mounted volume"
    assert volumes[mounts[tmp_dir]].get("emptyDir", {}).get("medium") == "Memory"
    pre_stop = spec.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
    assert pod["terminationGracePeriodSeconds"] > pause + config["graceful_timeout"]


def test_metrics_files_are_on_a_memory_volume_and_scraped_on_the_http_port(manifests, stages):
    """gunicorn's workers write their metrics to PROMETHEUS_MULTIPROC_DIR: on a read-only root
    file system it must be a mounted volume (in memory: the files are mmapped)."""
    from service import create_app

    deployment = find(manifests, "Deployment", "order-service")
    spec = container(deployment)
    directory = resolved_environment(manifests, stages)["PROMETHEUS_MULTIPROC_DIR"]
    mounts = {m["mountPath"]: m["name"] for m in spec.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert directory in mounts, f"PROMETHEUS_MULTIPROC_DIR {directory} is not a mounted volume"
    assert volumes[mounts[directory]].get("emptyDir", {}).get("medium") == "Memory"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port_number(spec, "http")
    app = create_app({"redis_url": "redis://127.0.0.1:1/0", "replica_id": "scrape-check"})
    get_routes = {rule.rule for rule in app.url_map.iter_rules() if "GET" in rule.methods}
    assert annotations["prometheus.io/path"] in get_routes
