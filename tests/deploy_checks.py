"""What the deployment checks share: parsers of the Dockerfile, gunicorn.conf.py and the k8s/
manifests, the environment variables the service's code reads, a renderer for the subset of
kustomize the overlays use (``render_kustomization``; there is no kustomize here) and what the
kubelet makes of a container's environment.

Used by tests/test_image.py, test_requirements.py, test_k8s.py, test_k8s_env.py,
test_k8s_network.py, test_k8s_sentinel.py and test_benchmark_job.py. Nothing here builds an
image or talks to a cluster. Each test module defines its fixtures (``stages``, ``final``,
``manifests``) on ``load_stages``, ``load_manifests`` and ``load_overlay``: fixtures imported
from here would read as unused imports to the linter.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
import os
import posixpath
import re
import runpy
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


def gunicorn_hooks() -> dict:
    """gunicorn.conf.py run as gunicorn runs it: its settings and its hooks, by name."""
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


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


# --- kustomize, the subset the overlays use --------------------------------------------------


class KustomizeError(ValueError):
    """A kustomization that ``render_kustomization`` cannot render as kustomize would."""


# Everything a kustomization may hold here; any other field is refused, not ignored.
KUSTOMIZATION_FIELDS = frozenset({"apiVersion", "kind", "namespace", "resources", "patches"})
CLUSTER_SCOPED_KINDS = frozenset({
    "Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
    "CustomResourceDefinition", "PriorityClass", "IngressClass",
})
# Kinds whose bodies name namespaces that kustomize's `namespace` rewrites too (subjects,
# webhook services): not implemented, so refused.
NAMESPACE_REFERENCING_KINDS = frozenset({
    "RoleBinding", "ClusterRoleBinding", "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration", "APIService", "CustomResourceDefinition",
})
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")
# How a strategic-merge patch merges each list it may touch, from the Kubernetes API's
# patchMergeKey / patchStrategy: the merge key, or None for a list the patch replaces whole.
# A patch that touches any other list of a base object is refused.
_POD_LISTS: dict[tuple[str, ...], str | None] = {
    ("containers",): "name",
    ("initContainers",): "name",
    ("volumes",): "name",
    ("topologySpreadConstraints",): "topologyKey",
    ("tolerations",): None,
    ("imagePullSecrets",): "name",
}
for _kind in ("containers", "initContainers"):
    _POD_LISTS.update({
        (_kind, "env"): "name",
        (_kind, "envFrom"): None,
        (_kind, "volumeMounts"): "mountPath",
        (_kind, "ports"): "containerPort",
        (_kind, "command"): None,
        (_kind, "args"): None,
    })
LIST_STRATEGIES: dict[tuple[str, tuple[str, ...]], str | None] = {
    **{(kind, ("spec", "template", "spec", *path)): key
       for kind in WORKLOAD_KINDS for path, key in _POD_LISTS.items()},
    ("Service", ("spec", "ports")): "port",
}


def render_kustomization(directory: Path, _stack: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """What ``kubectl apply -k directory`` would create, for the subset of kustomize used here.

    Implemented, as kustomize (v5) does it:

    - ``apiVersion: kustomize.config.k8s.io/v1beta1``, ``kind: Kustomization``;
    - ``resources``: YAML files (every document in them) and directories holding a
      ``kustomization.yaml``, rendered the same way, recursively; no URLs, no cycles, no two
      objects with the same kind, namespace and name;
    - ``patches``: entries ``{path: file}`` only (no ``target``, ``patch`` or ``options``),
      each file one strategic-merge patch of the object with its apiVersion, kind, name and
      namespace (the patch must give all four). Maps merge key by key, a ``null`` removes a
      key; lists merge as ``LIST_STRATEGIES`` says (by their merge key, or replaced whole) and
      only those lists may be patched where the object has them; ``$patch: delete`` removes
      the object (at the top) or a list element (in a keyed list). Patches apply in order,
      before ``namespace``;
    - ``namespace``: set on every object but the cluster-scoped kinds.

    Anything else raises KustomizeError: another kustomization field (``commonLabels``,
    ``images``, ``configMapGenerator``, ``components``, ...), another patch directive
    (``$patch: replace``, ``$retainKeys``, ``$setElementOrder``, ...), a list of unknown
    strategy, a patch that matches no object. An overlay change this cannot render fails the
    tests instead of being rendered wrongly.
    """
    directory = directory.resolve()
    if directory in _stack:
        raise KustomizeError(f"{directory}: a cycle of kustomizations")
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml (others are not implemented)")
    documents = load_documents(path)
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise KustomizeError(f"{path}: expected one mapping")
    kustomization = documents[0]
    unknown = sorted(set(kustomization) - KUSTOMIZATION_FIELDS)
    if unknown:
        raise KustomizeError(f"{path}: not implemented: {', '.join(unknown)}")
    if (kustomization.get("apiVersion") != "kustomize.config.k8s.io/v1beta1"
            or kustomization.get("kind") != "Kustomization"):
        raise KustomizeError(f"{path}: expected a kustomize.config.k8s.io/v1beta1 Kustomization")

    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources") or []:
        if not isinstance(entry, str) or "://" in entry or entry.startswith(("github.com", "git@")):
            raise KustomizeError(f"{path}: resource {entry!r}: only local files and directories")
        target = directory / entry
        if target.is_dir():
            added = render_kustomization(target, (*_stack, directory))
        elif target.is_file():
            added = load_documents(target)
        else:
            raise KustomizeError(f"{path}: resource {entry!r} does not exist")
        for document in added:
            _check_object(document, f"{path}: {entry}")
            if any(object_id(document) == object_id(known) for known in objects):
                raise KustomizeError(f"{path}: {object_id(document)} is defined twice")
            objects.append(copy.deepcopy(document))

    for entry in kustomization.get("patches") or []:
        if not isinstance(entry, dict) or set(entry) != {"path"}:
            raise KustomizeError(f"{path}: patch {entry!r}: only {{path: file}} is implemented")
        patches = load_documents(directory / entry["path"])
        if len(patches) != 1:
            raise KustomizeError(f"{path}: {entry['path']}: one patch per file is implemented")
        objects = _apply_patch(objects, patches[0], f"{path}: {entry['path']}")

    namespace = kustomization.get("namespace")
    if namespace is not None:
        for document in objects:
            if document["kind"] in NAMESPACE_REFERENCING_KINDS:
                raise KustomizeError(f"{path}: namespace on a {document['kind']}: its "
                                     "references would change too, not implemented")
            if document["kind"] not in CLUSTER_SCOPED_KINDS:
                document["metadata"]["namespace"] = namespace
    return objects


def _check_object(document: Any, where: str) -> None:
    if not isinstance(document, dict) or not all(
            document.get(key) for key in ("apiVersion", "kind")) or not isinstance(
            document.get("metadata"), dict) or not document["metadata"].get("name"):
        raise KustomizeError(f"{where}: every object needs apiVersion, kind and metadata.name")


def object_id(document: dict[str, Any]) -> tuple[str, str, str, str]:
    group = document["apiVersion"].rpartition("/")[0]
    metadata = document["metadata"]
    return group, document["kind"], metadata.get("namespace", ""), metadata["name"]


def _apply_patch(objects: list[dict[str, Any]], patch: Any,
                 where: str) -> list[dict[str, Any]]:
    _check_object(patch, where)
    if not patch["metadata"].get("namespace"):
        raise KustomizeError(f"{where}: the patch must name its object's namespace")
    matches = [i for i, document in enumerate(objects)
               if document["apiVersion"] == patch["apiVersion"]
               and object_id(document) == object_id(patch)]
    if len(matches) != 1:
        raise KustomizeError(f"{where}: {object_id(patch)} matches {len(matches)} objects")
    index = matches[0]
    directive = patch.get("$patch")
    if directive == "delete":
        return objects[:index] + objects[index + 1:]
    patched = _merge(objects[index], patch, objects[index]["kind"], (), where)
    return [*objects[:index], patched, *objects[index + 1:]]


def _plain(value: Any, where: str) -> Any:
    """A patch value set where the object has nothing: copied, with no directive in it."""
    if isinstance(value, dict):
        directives = [key for key in value if str(key).startswith("$")]
        if directives:
            raise KustomizeError(f"{where}: {directives[0]} where the object has nothing to "
                                 "patch: not implemented")
        return {key: _plain(item, where) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_plain(item, where) for item in value]
    return value


def _merge(base: Any, patch: Any, kind: str, path: tuple[str, ...], where: str) -> Any:
    here = f"{where}: {kind} {'.'.join(path) or '(top)'}"
    if isinstance(patch, dict):
        if not isinstance(base, dict):
            raise KustomizeError(f"{here}: a map patches a {type(base).__name__}")
        directives = [key for key in patch if str(key).startswith("$")]
        if directives:
            raise KustomizeError(f"{here}: {directives[0]} is not implemented here")
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = _merge(merged[key], value, kind, (*path, key), where)
            else:
                merged[key] = _plain(value, here)
        return merged
    if isinstance(patch, list):
        if not isinstance(base, list):
            raise KustomizeError(f"{here}: a list patches a {type(base).__name__}")
        if (kind, path) not in LIST_STRATEGIES:
            raise KustomizeError(f"{here}: how strategic merge merges this list is not "
                                 "modelled (LIST_STRATEGIES)")
        key = LIST_STRATEGIES[(kind, path)]
        if key is None:
            return _plain(patch, here)
        merged = copy.deepcopy(base)
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise KustomizeError(f"{here}: every element needs its merge key {key!r}")
            found = [i for i, element in enumerate(merged) if element.get(key) == item[key]]
            directive = item.get("$patch")
            if directive == "delete":
                if set(item) != {key, "$patch"}:
                    raise KustomizeError(f"{here}: $patch: delete with other fields")
                merged = [element for element in merged if element.get(key) != item[key]]
            elif directive is not None:
                raise KustomizeError(f"{here}: $patch: {directive} is not implemented")
            elif found:
                merged[found[0]] = _merge(merged[found[0]], item, kind, path, where)
            else:
                merged.append(_plain(item, here))
        return merged
    if isinstance(base, (dict, list)):
        raise KustomizeError(f"{here}: a {type(patch).__name__} patches a "
                             f"{type(base).__name__}")
    return patch


def load_overlay(name: str) -> list[dict[str, Any]]:
    """Everything `kubectl apply -k k8s/<name>/` creates, rendered offline."""
    return render_kustomization(K8S / name)


# --- What the kubelet gives a container ------------------------------------------------------


def expand_references(text: str, variables: dict[str, str]) -> str:
    """The kubelet's expansion of ``$(NAME)`` in env values, command and args: a defined
    variable is replaced, an undefined reference stays as written, ``$$`` is one ``$``."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and ")" in text[i:]:
            end = text.index(")", i)
            name = text[i + 2:end]
            out.append(variables.get(name, text[i:end + 1]))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def undefined_references(spec: dict[str, Any]) -> list[str]:
    """``$(NAME)`` references of a container the kubelet would leave as they are: in env, to
    a variable not defined above; in command and args, to one not defined at all."""
    reference = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
    defined: set[str] = set()
    problems = []
    for entry in spec.get("env", []):
        for name in reference.findall(str(entry.get("value", ""))):
            if name not in defined:
                problems.append(f"env {entry['name']}: $({name}) is not defined above it")
        defined.add(entry["name"])
    for field in ("command", "args"):
        for item in spec.get(field, []):
            for name in reference.findall(str(item)):
                if name not in defined:
                    problems.append(f"{field}: $({name}) is not defined")
    return problems


def container_environment(spec: dict[str, Any], fields: dict[str, str],
                          secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """A container's ``env`` as the process sees it: values expanded as the kubelet does,
    ``fieldRef`` from ``fields`` (fieldPath -> value), ``secretKeyRef`` from ``secrets``
    ((name, key) -> value). No envFrom here (the order-service's is in test_k8s_env.py)."""
    environment: dict[str, str] = {}
    for entry in spec.get("env", []):
        source = entry.get("valueFrom")
        if source is None:
            value = expand_references(str(entry.get("value", "")), environment)
        elif "fieldRef" in source:
            value = fields[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            reference = source["secretKeyRef"]
            value = secrets[(reference["name"], reference["key"])]
        else:
            raise AssertionError(f"env {entry['name']}: {sorted(source)} is not modelled")
        environment[entry["name"]] = value
    return environment
