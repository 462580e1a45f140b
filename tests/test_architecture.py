"""The code's shape, enforced: the runtime's layers (import-linter's contracts in pyproject.toml, run as
``lint-imports``), no import cycle between modules, no library module that imports a command line, and no module
over 300 lines. grimp (import-linter's graph) reads every import statement, function-local ones and those under
``if TYPE_CHECKING:`` included; the graph is built afresh (no cache), so a stale cache cannot hide an import."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.run_support import REPO

grimp = pytest.importorskip("grimp", reason="the [test] extra's import-linter (grimp) is not installed")

MAX_LINES = 300
MAX_IGNORED = 2  # imports back up the layers that the contract may justify
COMMAND_LINE = ("runtime.run", "runtime.cli")  # with every package's __main__


def _graph():
    return grimp.build_graph("runtime", exclude_type_checking_imports=False, cache_dir=None)


def _is_command_line(module: str) -> bool:
    return module.endswith(".__main__") or any(module == c or module.startswith(c + ".") for c in COMMAND_LINE)


def test_the_layer_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout and "0 broken" in done.stdout, done.stdout[-2000:]


def test_at_most_two_justified_imports_back_up():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = [c for c in config["contracts"] if c["type"] == "layers"]
    assert len(layers) == 1 and len(layers[0].get("ignore_imports", [])) <= MAX_IGNORED
    assert not config.get("exclude_type_checking_imports")  # annotation-only imports count too


def test_no_import_cycle():
    graph = _graph()
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    # Tarjan's strongly connected components, iteratively
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    assert not cycles, f"import cycles: {cycles}"


def test_only_command_lines_import_command_lines():
    graph = _graph()
    offenders = sorted((importer, imported) for importer in graph.modules if not _is_command_line(importer)
                       for imported in graph.find_modules_directly_imported_by(importer)
                       if _is_command_line(imported))
    assert not offenders, f"library modules importing a command line: {offenders}"


def test_no_module_over_300_lines():
    long = {str(path.relative_to(REPO)): n for folder in ("runtime", "export", "benchmarks")
            for path in (REPO / folder).rglob("*.py") if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
