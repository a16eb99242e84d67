"""The house's rules, read from the code: floors and arrows between packages, no import cycle
between modules, no product module over 400 lines (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Each package may import the packages on the floors below it, never one above or beside it.
MAY_IMPORT = {
    "trainer": set(),
    "state": {"trainer"},
    "live": {"state", "trainer"},
    "worker": {"live", "state", "trainer"},
    "service": {"worker", "live", "state", "trainer"},
}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for package in MAY_IMPORT:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Project modules `path` imports, at any depth (function-local imports count too)."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


MODULES = _modules()
GRAPH = {name: _imports(path, name, MODULES) for name, path in MODULES.items()}


def test_packages_import_only_the_floors_below_them() -> None:
    wrong = [f"{name} -> {target}" for name, targets in GRAPH.items() for target in targets
             if (top := target.split(".")[0]) != name.split(".")[0]
             and top not in MAY_IMPORT[name.split(".")[0]]]
    assert wrong == []


def test_no_import_cycle_between_modules() -> None:
    # Package __init__ files are left out: importing a submodule runs its package first, which
    # is not an arrow the code chose.
    graph = {n: {t for t in ts if MODULES[t].name != "__init__.py"}
             for n, ts in GRAPH.items() if MODULES[n].name != "__init__.py"}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert cycles == []


def test_no_product_module_over_400_lines() -> None:
    long = {str(path.relative_to(REPO)): n for path in MODULES.values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_a_process_that_never_builds_a_resnet_never_imports_torchvision() -> None:
    """Importing torchvision loads torch._dynamo: about 2 s at the start of every job, API
    and command-line process. Only building a ResNet or reading ImageNet weights needs it."""
    import subprocess
    import sys

    code = ("import sys, trainer.engine, trainer.cli, service.app, worker.job_process\n"
            "from trainer.backbones import Encoder\n"
            "Encoder('small_cnn', 8)\n"
            "assert 'torchvision' not in sys.modules, 'torchvision was imported'\n"
            "Encoder('resnet18_cifar', 8)\n"
            "assert 'torchvision' in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
