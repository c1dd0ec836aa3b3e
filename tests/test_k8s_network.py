"""The NetworkPolicies of k8s/, checked offline: which pods may reach Redis and the service,
evaluated from the policies, the pods' labels and their ports. The check is also shown noticing
an opened and a removed policy.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from .deploy_checks import (
    NAMESPACE,
    container,
    find,
    load_job,
    load_manifests,
    pod_labels,
    selects,
)


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    """Everything `kubectl apply -k k8s/` creates."""
    return load_manifests()


def ingress_allowed(policies: list[dict], source_labels: dict[str, str], source_namespace: str,
                    target_labels: dict[str, str], port: int, target_ports: dict[str, int],
                    namespace: str = NAMESPACE) -> bool:
    """Whether NetworkPolicy lets a pod reach a pod of ``namespace`` on a TCP port.

    Namespaces are matched by their kubernetes.io/metadata.name label; an ipBlock peer counts
    as letting anyone in (pod addresses may fall in it).
    """
    selecting = [p for p in policies if p["metadata"]["namespace"] == namespace
                 and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                 and selects(p["spec"].get("podSelector"), target_labels)]
    if not selecting:
        return True  # not isolated

    def peer_allows(peer: dict[str, Any]) -> bool:
        if "ipBlock" in peer:
            return True
        if "namespaceSelector" in peer:
            namespace_labels = {"kubernetes.io/metadata.name": source_namespace}
            if not selects(peer["namespaceSelector"], namespace_labels):
                return False
        elif source_namespace != namespace:
            return False
        return selects(peer.get("podSelector"), source_labels)

    def port_allows(rule_port: dict[str, Any]) -> bool:
        if rule_port.get("protocol", "TCP") != "TCP":
            return False
        number = rule_port.get("port")
        if isinstance(number, str):
            number = target_ports.get(number)
        return number is None or number == port

    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            peers, ports = rule.get("from"), rule.get("ports")
            if (not peers or any(peer_allows(p) for p in peers)) and (
                    not ports or any(port_allows(p) for p in ports)):
                return True
    return False


def reachability(manifests: list[dict]) -> dict[str, bool]:
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"]
    service = find(manifests, "Deployment", "order-service")
    redis = find(manifests, "StatefulSet", "redis")
    job = load_job()
    redis_ports = {p["name"]: p["containerPort"] for p in container(redis)["ports"]}
    service_ports = {p["name"]: p["containerPort"] for p in container(service)["ports"]}
    redis_port, http_port = redis_ports["redis"], service_ports["http"]

    def allowed(source: dict, namespace: str, target: dict, port: int, ports: dict) -> bool:
        return ingress_allowed(policies, pod_labels(source) if "spec" in source else source,
                               namespace, pod_labels(target), port, ports)

    return {
        "order-service -> redis": allowed(service, NAMESPACE, redis, redis_port, redis_ports),
        "order-service -> redis, other port": allowed(service, NAMESPACE, redis, 6380,
                                                      redis_ports),
        "job -> redis": allowed(job, NAMESPACE, redis, redis_port, redis_ports),
        "other pod -> redis": allowed({"app": "debug"}, NAMESPACE, redis, redis_port,
                                      redis_ports),
        "order-service labels, other namespace -> redis": allowed(
            service, "default", redis, redis_port, redis_ports),
        "job -> order-service": allowed(job, NAMESPACE, service, http_port, service_ports),
    }


def test_network_policies(manifests):
    assert reachability(manifests) == {
        "order-service -> redis": True,
        "order-service -> redis, other port": False,
        "job -> redis": False,
        "other pod -> redis": False,
        "order-service labels, other namespace -> redis": False,
        "job -> order-service": True,
    }


def test_network_check_notices_an_open_redis(manifests):
    opened = copy.deepcopy(manifests)
    find(opened, "NetworkPolicy", "redis")["spec"]["ingress"][0]["from"] = [{"podSelector": {}}]
    assert reachability(opened)["job -> redis"] is True
    removed = [m for m in manifests if not (m["kind"] == "NetworkPolicy"
                                            and m["metadata"]["name"] == "redis")]
    assert reachability(removed)["other pod -> redis"] is True
