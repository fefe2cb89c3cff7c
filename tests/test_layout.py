"""The architecture, read from the imports: every module of agent/, collector/ and protocol/ is
parsed (imports inside functions included) and its imports checked against the layers below.

Bottom to top: the shared protocol; the pure rules core; errors, config, database; the
repositories (store, notification outbox, ingest validation); the services that use them (checks,
live evaluator, reporting, metrics); the collector's state; the HTTP layer (API, status pages);
the application and its jobs; the command line and the demo. A module may import from its own
layer or a lower one, never from a higher one, and no two modules import each other in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "collector", "evidence", "protocol")

# (module prefix, layer); the longest matching prefix decides.
LAYERS = {
    "protocol": 0,
    "collector.rules": 1,
    "collector.errors": 2, "collector.config": 2, "collector.db": 2, "collector.ratelimit": 2, "collector.migrate": 2,
    "collector.store": 3, "collector.notify": 3, "collector.ingest": 3, "collector.offload": 3,
    "collector.incidents": 3, "collector.partitions": 3,
    "collector.checks": 4, "collector.evaluator": 4, "collector.reporting": 4, "collector.metrics": 4,
    "collector.alert_rules": 4, "collector.shards": 4, "collector.rollup_reports": 4,
    "collector.service": 5,
    "collector.api": 6, "collector.status": 6,
    "collector.jobs": 7, "collector.app": 7,
    "collector.cli": 8, "collector.demo": 8, "collector": 8,
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """The project modules `module` imports, resolved to names in MODULES."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from a import b` names module a.b when there is one, else something defined in a
            targets = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in MODULES else prefix
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != module:
                names.add(target)
    return names


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _layer(module: str) -> int | None:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    return LAYERS[best] if best is not None else None


def test_every_collector_module_has_a_layer():
    assert [m for m in MODULES if m.startswith("collector") and _layer(m) is None] == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(("collector", "protocol"))))
def test_nothing_imports_from_a_layer_above(module):
    above = sorted(t for t in GRAPH[module]
                   if t.startswith(("collector", "protocol")) and _layer(t) > _layer(module))
    assert above == [], f"{module} (layer {_layer(module)}) imports from above: {above}"


def test_protocol_imports_neither_agent_nor_collector():
    assert {m: sorted(t for t in GRAPH[m] if not t.startswith("protocol"))
            for m in MODULES if m.startswith("protocol")} == {m: [] for m in MODULES if m.startswith("protocol")}


def test_the_offline_verifier_needs_only_the_protocol_and_the_pure_rules_core():
    # a customer verifies a bundle with no database, no network and no collector running
    reaching = sorted((m, t) for m in MODULES if m.startswith("evidence") for t in GRAPH[m]
                      if not t.startswith(("evidence", "protocol", "collector.rules")))
    assert reaching == []
    assert any(t.startswith("collector.rules") for m in MODULES if m.startswith("evidence") for t in GRAPH[m])


def test_agent_imports_nothing_of_the_collector():
    assert sorted((m, t) for m in MODULES if m.startswith("agent") for t in GRAPH[m] if t.startswith("collector")) == []


def test_collector_reaches_the_agent_only_through_its_public_entry_point_in_the_demo():
    reaching = sorted((m, t) for m in MODULES if m.startswith("collector") for t in GRAPH[m] if t.startswith("agent"))
    assert reaching == [("collector.demo", "agent")]


def test_no_import_cycles():
    # Tarjan's strongly connected components: any of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert cycles == []


def test_the_checker_sees_every_kind_of_import():
    # The checker must not pass by seeing nothing: a relative import, one inside a function, a
    # `from package import module`, and one across packages.
    assert "collector.api.common" in GRAPH["collector.status.views"]
    assert "collector.app" in GRAPH["collector.cli"]
    assert "collector.store" in GRAPH["collector.evaluator"]
    assert "collector.service" in GRAPH["collector.api.common"]
    assert _layer("collector.api.common") > _layer("collector.service")
    assert "protocol.durations" in GRAPH["collector.rules.durations"]
