"""What the deployment checks share: parsers of the Dockerfile, gunicorn.conf.py and the k8s/
manifests, and the environment variables the service's code reads.

Used by tests/test_image.py, test_requirements.py, test_k8s.py, test_k8s_env.py,
test_k8s_network.py and test_benchmark_job.py. Nothing here builds an image or talks to a
cluster. Each test module defines its fixtures (``stages``, ``final``, ``manifests``) on
``load_stages`` and ``load_manifests``: fixtures imported from here would read as unused
imports to the linter.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import posixpath
import shlex
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from service.config import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
NAMESPACE = "order"
# The benchmark Job lives in its own file, outside the kustomization: it runs on demand.
JOB_FILE = "benchmark-job.yaml"


# --- What the service reads ------------------------------------------------------------------


def environ_reads(source: str) -> tuple[set[str], list[str]]:
    """Names read from os.environ by ``source``, and the reads whose name is not a literal.

    Recognised: ``os.environ.get("X")``, ``os.environ["X"]``, ``os.getenv("X")``. Any other use
    of ``os.environ`` (a loop over it, a computed name) lands in the second list, so a new
    way of reading the environment cannot slip past the checks unseen.
    """
    names: set[str] = set()
    unknown: list[str] = []
    handled: set[int] = set()

    def is_environ(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "environ"
                and isinstance(node.value, ast.Name) and node.value.id == "os")

    def literal(node: ast.AST | None) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        return None

    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            environ_get = func.attr == "get" and is_environ(func.value)
            getenv = (func.attr == "getenv" and isinstance(func.value, ast.Name)
                      and func.value.id == "os")
            if environ_get or getenv:
                handled.add(id(func.value) if environ_get else id(func))
                name = literal(node.args[0]) if node.args else None
                if name is None:
                    unknown.append(ast.unparse(node))
                else:
                    names.add(name)
        elif isinstance(node, ast.Subscript) and is_environ(node.value):
            handled.add(id(node.value))
            name = literal(node.slice)
            if name is None:
                unknown.append(ast.unparse(node))
            else:
                names.add(name)
    for node in ast.walk(tree):
        if is_environ(node) and id(node) not in handled:
            unknown.append(f"line {node.lineno}: {ast.get_source_segment(source, node)}")
    return names, unknown


def gunicorn_variables() -> set[str]:
    names, unknown = environ_reads((ROOT / "gunicorn.conf.py").read_text())
    assert not unknown, f"gunicorn.conf.py reads the environment in a way not parsed: {unknown}"
    return names


def settings_variables() -> set[str]:
    """Settings.from_env reads each field under its upper-cased name."""
    return {field.name.upper() for field in dataclasses.fields(Settings)}


def service_variables() -> set[str]:
    return settings_variables() | gunicorn_variables()


def unread(names: Iterable[str], readable: set[str]) -> list[str]:
    return sorted(set(names) - readable)


# --- gunicorn.conf.py ------------------------------------------------------------------------


def gunicorn_config(env: dict[str, str]) -> dict[str, Any]:
    """gunicorn.conf.py evaluated, in a fresh interpreter, with exactly ``env``."""
    code = ("import json, runpy; ns = runpy.run_path('gunicorn.conf.py'); print(json.dumps("
            "{k: ns[k] for k in ('bind', 'graceful_timeout', 'worker_tmp_dir')}))")
    env = {key: value for key, value in env.items() if key != "PATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, env={**env, "PATH": os.environ.get("PATH", "")},
                            timeout=30, check=True)
    return json.loads(result.stdout)


def gunicorn_setting(name: str) -> object:
    """A constant module-level setting of gunicorn.conf.py, None if it sets none."""
    tree = ast.parse((ROOT / "gunicorn.conf.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == name for target in node.targets):
            return ast.literal_eval(node.value)
    return None


# --- The Dockerfile --------------------------------------------------------------------------


def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """The instructions of each stage as (KEYWORD, arguments), continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions:
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, arguments))
    return stages


def load_stages() -> list[list[tuple[str, str]]]:
    return dockerfile_stages((ROOT / "Dockerfile").read_text())


def env_assignments(arguments: str) -> dict[str, str]:
    tokens = shlex.split(arguments)
    if tokens and "=" not in tokens[0]:  # legacy form: ENV NAME value
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(token.split("=", 1) for token in tokens)


def stage_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            env.update(env_assignments(arguments))
    return env


def only(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for kw, arguments in stage if kw == keyword]


def workdir_contents(stage: list[tuple[str, str]]) -> tuple[str, dict[str, str]]:
    """The final WORKDIR, and what the build context's COPYs put where (path -> source)."""
    workdir = "/"
    contents: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, arguments))
        elif keyword in ("COPY", "ADD"):
            tokens = shlex.split(arguments)
            if any(token.startswith("--from") for token in tokens):
                continue
            *sources, dest = [token for token in tokens if not token.startswith("--")]
            dest_path = posixpath.normpath(posixpath.join(workdir, dest))
            for source in sources:
                source = posixpath.normpath(source)
                into_directory = dest.endswith("/") or len(sources) > 1
                if (ROOT / source).is_file() and into_directory:
                    target = posixpath.join(dest_path, posixpath.basename(source))
                else:  # a file to a file name, or a directory's contents into dest
                    target = dest_path
                contents[target] = source
    return workdir, contents


def image_user(stage: list[tuple[str, str]]) -> str:
    users = only(stage, "USER")
    assert users, "the final stage sets no USER: the image would run as root"
    return users[-1]


# --- The repository's packages ---------------------------------------------------------------


def local_packages(package: str) -> set[str]:
    """``package`` and the repository's packages it imports, at any depth."""
    found, todo = set(), [package]
    while todo:
        name = todo.pop()
        found.add(name)
        for file in (ROOT / name).rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    top = node.module.split(".")[0]
                elif isinstance(node, ast.Import):
                    top = node.names[0].name.split(".")[0]
                else:
                    continue
                if top not in found and (ROOT / top / "__init__.py").exists():
                    todo.append(top)
    return found


# --- Kubernetes manifests --------------------------------------------------------------------


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def manifest_files() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


def load_manifests() -> list[dict[str, Any]]:
    """Everything `kubectl apply -k k8s/` creates."""
    return [document for path in manifest_files() if path.name != JOB_FILE
            for document in load_documents(path)]


def load_job() -> dict[str, Any]:
    documents = load_documents(K8S / JOB_FILE)
    assert [document["kind"] for document in documents] == ["Job"]
    return documents[0]


def find(manifests: list[dict], kind: str, name: str) -> dict[str, Any]:
    matches = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def container(workload: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    name = name or workload["metadata"]["name"]
    matches = [c for c in containers if c["name"] == name] or containers[:1]
    return matches[0]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A label selector (or a Service's plain selector) against a pod's labels."""
    selector = selector or {}
    assert not selector.get("matchExpressions"), "matchExpressions are not modelled here"
    labelled = "matchLabels" in selector or "matchExpressions" in selector
    match = selector.get("matchLabels") or {} if labelled else selector
    return all(labels.get(key) == value for key, value in match.items())


def job_command(job: dict[str, Any]) -> list[str]:
    spec = container(job)
    return [*spec.get("command", []), *spec.get("args", [])]


def port_number(spec: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        assert port in [p["containerPort"] for p in spec["ports"]], f"no container port {port}"
        return port
    matches = [p["containerPort"] for p in spec["ports"] if p.get("name") == port]
    assert matches, f"no container port named {port}"
    return matches[0]
