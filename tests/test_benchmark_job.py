"""The benchmark Job (k8s/benchmark-job.yaml), checked offline: `python -m benchmarks` accepts
its command line, which runs the seed experiment against the order-service Service, writes only
to mounted emptyDirs, uses the service's admin token, and its pods are not taken for replicas.

Named test_benchmark*.py: it imports the benchmark's argument parser (see test_structure.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from .deploy_checks import (
    container,
    find,
    job_command,
    load_job,
    load_manifests,
    pod_labels,
    selects,
)


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    """Everything `kubectl apply -k k8s/` creates."""
    return load_manifests()


def test_benchmark_job_runs_the_seed_experiment_against_the_service(manifests):
    from benchmarks.__main__ import parse_args

    job = load_job()
    command = job_command(job)
    assert command[:3] == ["python", "-m", "benchmarks"]
    try:
        args = parse_args(command[3:])
    except SystemExit:
        pytest.fail(f"python -m benchmarks refuses the Job's arguments: {command[3:]}")
    assert args.scenarios == ("seed",)
    service = find(manifests, "Service", "order-service")
    target = urlsplit(args.url)
    assert target.hostname == (f"{service['metadata']['name']}."
                               f"{service['metadata']['namespace']}.svc.cluster.local")
    assert (target.port or 80) == service["spec"]["ports"][0]["port"]
    assert float(args.wait_ready) > 0
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] > float(args.wait_ready)
    assert isinstance(spec["backoffLimit"], int) and spec["ttlSecondsAfterFinished"] > 0
    # Everything the Job writes is on a mounted emptyDir: its root file system is read-only.
    pod = spec["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [m for m in container(job)["volumeMounts"] if "emptyDir" in volumes[m["name"]]]
    env = {e["name"]: e.get("value", "") for e in container(job).get("env", [])}
    for path in (str(args.out), env.get("MPLCONFIGDIR", "")):
        assert any(path.startswith(m["mountPath"].rstrip("/") + "/") for m in mounts), path
    # It sets the stock, which the service guards with its admin token: the same Secret.
    deployment_token = next(e for e in container(find(manifests, "Deployment", "order-service"))
                            ["env"] if e["name"] == "ADMIN_TOKEN")
    job_token = next(e for e in container(job)["env"] if e["name"] == "ADMIN_TOKEN")
    assert job_token["valueFrom"] == deployment_token["valueFrom"]


def test_benchmark_job_pods_are_not_replicas(manifests):
    labels = pod_labels(load_job())
    deployment = find(manifests, "Deployment", "order-service")
    assert not selects(deployment["spec"]["selector"], labels)
    assert not selects(find(manifests, "Service", "order-service")["spec"]["selector"], labels)
    budget = find(manifests, "PodDisruptionBudget", "order-service")
    assert not selects(budget["spec"]["selector"], labels)
