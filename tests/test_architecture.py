"""The tree is the map: no import cycles, and imports point only the allowed way.

Rules (docs/design.md §1, README "Layout"):
- no cycle among the project's modules, counting imports inside functions too;
- `farm/` never imports `attacks/` or `jobs/`; `attacks/` never imports `jobs/`;
- `attacks/stats/` and `attacks/methods/` are pure: numpy/scipy/scikit-learn/torch and each other, never
  Ray, HTTP or the stage's I/O and model access (oracles, compute, studies, report, the stage);
- entry points (`if __name__ == "__main__"`) only in `jobs/`;
- small files with one job: no module over 300 lines, no function over 60 (benchmarks' functions, jobs/bench/, exempt).

Imports are read with `ast`, not by importing, so a rule breaks here before anything runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("farm", "attacks", "jobs")
PURE = ("attacks.stats", "attacks.methods")
PURE_MAY_IMPORT = ("attacks.stats", "attacks.methods", "attacks.responses", "farm.errors")
FORBIDDEN_IN_PURE = ("ray", "http", "urllib", "socket", "requests", "aiohttp", "pyarrow", "tqdm")


def module_files(root: Path) -> dict[str, Path]:
    """module name -> file, for every .py of the project's packages under `root`."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module named by an import anywhere in `path` (top level or inside functions).

    Project imports resolve to the most specific project module (`from attacks.stats import metrics`
    names attacks.stats.metrics); others are kept as their top-level name (`ray`, `http`).
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in modules else node.module)
    out = set()
    for name in names:
        if name.split(".")[0] in PACKAGES:
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            out.add(name)
        else:
            out.add(name.split(".")[0])
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """project module -> the project modules it imports (package __init__ files count as modules)."""
    modules = module_files(root)
    return {name: {m for m in imports_of(path, modules) if m in modules and m != name}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
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
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(root: Path) -> list[str]:
    """Every broken direction rule, one line each."""
    modules = module_files(root)
    problems = []
    for name, path in modules.items():
        imported = imports_of(path, modules)
        top = name.split(".")[0]
        for other in sorted(imported):
            other_top = other.split(".")[0]
            if top == "farm" and other_top in ("attacks", "jobs"):
                problems.append(f"{name} imports {other}: farm/ never imports the attack stage or the jobs")
            if top == "attacks" and other_top == "jobs":
                problems.append(f"{name} imports {other}: attacks/ never imports jobs/")
            if name.startswith(PURE):
                if other_top in FORBIDDEN_IN_PURE:
                    problems.append(f"{name} imports {other}: attacks/stats and attacks/methods stay pure")
                if other_top in PACKAGES and not other.startswith(PURE_MAY_IMPORT):
                    problems.append(f"{name} imports {other}: pure modules import only {', '.join(PURE_MAY_IMPORT)}")
        if top != "jobs" and "__main__" in path.read_text():
            tree = ast.parse(path.read_text())
            if any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body):
                problems.append(f"{name} has an `if __name__ == '__main__'` block: entry points live in jobs/")
    return problems


MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def oversized(root: Path) -> list[str]:
    """Modules over MAX_MODULE_LINES and functions over MAX_FUNCTION_LINES (jobs/bench/ functions exempt)."""
    found = []
    for path in sorted([*module_files(root).values(), *(root / "tests").glob("*.py")]):
        text, rel = path.read_text(), path.relative_to(root)
        if text.count("\n") > MAX_MODULE_LINES:
            found.append(f"{rel}: {text.count(chr(10))} lines")
        if rel.parts[:2] == ("jobs", "bench"):
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    return found


def test_small_modules_and_functions():
    assert oversized(ROOT) == []


def test_an_oversized_function_is_found(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    root = _tree(tmp_path, {"attacks/long.py": f"def long():\n{body}", "jobs/bench/long.py": f"def long():\n{body}"})
    (root / "tests").mkdir()
    assert oversized(root) == [f"attacks/long.py:1 long: {MAX_FUNCTION_LINES + 1} lines"]


def test_no_import_cycles():
    assert cycles(import_graph(ROOT)) == []


def test_dependency_direction():
    assert violations(ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").touch()
    return tmp_path


def test_a_cycle_is_found_even_through_a_lazy_import(tmp_path):
    root = _tree(tmp_path, {
        "attacks/a.py": "from attacks.b import f\n",
        "attacks/b.py": "def f():\n    from attacks import c\n",
        "attacks/c.py": "import attacks.a\n",
        "farm/x.py": "from farm import y\n",
        "farm/y.py": "import numpy\n",
    })
    assert cycles(import_graph(root)) == [["attacks.a", "attacks.b", "attacks.c"]]


@pytest.mark.parametrize(("rel", "text", "rule"), [
    ("farm/x.py", "from attacks.stage import attack_run\n", "farm/ never imports"),
    ("attacks/stats/x.py", "import ray\n", "stay pure"),
    ("attacks/methods/x.py", "def f():\n    from attacks.oracles.model import ModelOracle\n",
     "pure modules import only"),
    ("attacks/x.py", "from jobs.common import run_cli\n", "attacks/ never imports jobs/"),
    ("farm/x.py", "if __name__ == '__main__':\n    pass\n", "entry points live in jobs/"),
])
def test_each_direction_rule_fails_when_broken(tmp_path, rel, text, rule):
    root = _tree(tmp_path, {rel: text, "attacks/stats/__init__.py": "", "attacks/methods/__init__.py": "",
                            "attacks/stage.py": "", "attacks/oracles/__init__.py": "",
                            "attacks/oracles/model.py": "", "jobs/common.py": ""})
    found = violations(root)
    assert len(found) == 1 and rule in found[0], found
