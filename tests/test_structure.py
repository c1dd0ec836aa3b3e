"""The package's shape: imports between service/ modules run one way (no cycle, deferred and
TYPE_CHECKING imports included), and importing one module does not load Flask."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "service"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The service modules ``path`` imports anywhere in its body."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # "from . import metrics" imports the module service.metrics; "from .keys import
            # SKU" imports service.keys.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in modules}
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    paths = list(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, modules) for path in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


def test_no_import_cycle_among_service_modules():
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_one_module_loads_no_flask():
    code = ("import sys, service.keys, service.lock, service.metrics\n"
            "print(sorted(m for m in sys.modules if m == 'flask' or m.startswith('werkzeug')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# Below the HTTP layer: what the domain is made of.
DOMAIN = {"service.model", "service.records", "service.orders", "service.strategies",
          "service.strategies.lock",
          "service.strategies.lua", "service.strategies.none",
          "service.strategies.read_decide_write", "service.lock", "service.cohort",
          "service.watchdog", "service.scripts", "service.keys", "service.config",
          "service.redis_client", "service.metrics"}
HTTP = {"service", "service.api", "service.errors", "service.inputs", "service.metrics_api",
        "service.openapi", "service.orders_endpoint",
        "service.telemetry", "service.logs"}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_domain_knows_nothing_of_http():
    """Arrows run down: no domain module reaches the HTTP layer's modules, and the domain
    raises exceptions without statuses (errors.py maps them)."""
    graph = import_graph()
    assert DOMAIN | HTTP == set(graph), "a new module: place it in DOMAIN or HTTP"
    assert {module: sorted(reachable(graph, module) & HTTP) for module in DOMAIN
            if reachable(graph, module) & HTTP} == {}


def imported_roots(directory: Path) -> dict[str, set[str]]:
    """For each file under ``directory``, the top-level packages it imports (absolute only)."""
    found = {}
    for path in directory.rglob("*.py"):
        roots = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
        found[path.relative_to(ROOT).as_posix()] = roots
    return found


def test_layers_import_downwards_only():
    """service/ knows neither the harness nor the benchmark; the harness does not know the
    benchmark; tests import the benchmark only to test the benchmark (test_benchmark*.py)."""
    upward = {
        "service": {"harness", "benchmarks", "tests"},
        "harness": {"benchmarks", "tests"},
        "benchmarks": {"tests"},
        "tests": {"benchmarks"},
    }
    wrong = {}
    for directory, forbidden in upward.items():
        for path, roots in imported_roots(ROOT / directory).items():
            if directory == "tests" and Path(path).name.startswith("test_benchmark"):
                continue
            if roots & forbidden:
                wrong[path] = sorted(roots & forbidden)
    assert wrong == {}
