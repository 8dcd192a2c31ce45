"""The house holds: no import cycle among dlforge's modules (imports inside functions included), the floors of
docs/architecture.md (import-linter), a light Trainer, and an API with no branches on task names."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dlforge
from dlforge import registry

PACKAGE = Path(dlforge.__file__).resolve().parent
ROOT = PACKAGE.parent


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package at `package_dir`."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its file (top level, functions, TYPE_CHECKING)."""
    files = module_files(package_dir)
    root = package_dir.name

    def owner(name: str) -> str | None:  # `pkg.mod.Class` -> `pkg.mod`
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {owner(a.name) for a in node.names if a.name.split(".")[0] == root}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                if base.split(".")[0] == root:
                    targets |= {owner(f"{base}.{a.name}") for a in node.names}
        graph[module] = {t for t in targets if t and t != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_sees_a_cycle_made_by_an_import_inside_a_function(tmp_path):
    pkg = tmp_path / "toy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from toy.high import g\n    return g\n")
    (pkg / "high.py").write_text("from . import low\n\ndef g():\n    return low\n")
    (pkg / "side.py").write_text("import toy.low\n")
    graph = import_graph(pkg)
    assert graph["toy.high"] == {"toy.low"} and graph["toy.side"] == {"toy.low"}
    assert find_cycle(graph) in (["toy.low", "toy.high", "toy.low"], ["toy.high", "toy.low", "toy.high"])
    (pkg / "low.py").write_text("def f():\n    return 1\n")
    assert find_cycle(import_graph(pkg)) is None


def test_no_import_cycle_among_dlforge_modules():
    graph = import_graph(PACKAGE)
    assert len(graph) > 100  # the whole package was read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_import_contract_holds():
    """The floors, as import-linter checks them in `make lint` (see [tool.importlinter] in pyproject.toml)."""
    lint = Path(sys.executable).with_name("lint-imports")
    assert lint.exists(), f"{lint} is missing: install the dev extra (pip install -e '.[dev]')"
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_importing_the_trainer_loads_no_tokenizer_dataset_model_or_task():
    code = textwrap.dedent("""
        import json, sys
        import dlforge.train.trainer
        from dlforge import registry
        print(json.dumps({"modules": sorted(m for m in sys.modules if m.startswith("dlforge")),
                          "registered": registry._MODELS.keys() | registry._DATASETS.keys() | registry._TASKS.keys()},
                         default=sorted))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    import json

    report = json.loads(done.stdout)
    loaded = set(report["modules"])
    assert "dlforge.train.trainer" in loaded
    assert report["registered"] == []
    heavy = sorted(m for m in loaded if m.startswith(("dlforge.text", "dlforge.tasks", "dlforge.catalog", "dlforge.llm",
                                                      "dlforge.rag", "dlforge.api", "dlforge.artifacts")))
    assert heavy == []
    assert sorted(m for m in loaded if m.startswith("dlforge.models.")) == ["dlforge.models.output"]
    assert sorted(m for m in loaded if m.startswith("dlforge.data.")) == ["dlforge.data.dataset"]


def string_tests(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, string) for each string constant compared with == / != / in, or matched by a `case`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                elts = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
                found += [(node.lineno, e.value) for e in elts if isinstance(e, ast.Constant)
                          and isinstance(e.value, str)]
        elif isinstance(node, ast.match_case):
            found += [(node.pattern.lineno, n.value.value) for n in ast.walk(node.pattern)
                      if isinstance(n, ast.MatchValue) and isinstance(n.value, ast.Constant)]
    return found


TRAIN_FILES = [f"train/{p.name}" for p in sorted((PACKAGE / "train").glob("*.py"))]


@pytest.mark.parametrize("path", ["api.py", "inference.py", "cli/train.py", *TRAIN_FILES])
def test_no_branch_on_a_task_name(path):
    """A new task is files under dlforge/tasks/, never a branch in the API, the Trainer or the train command."""
    tasks = set(registry.list_tasks())
    assert {"classification", "regression", "forecast", "language_modeling", "translation"} <= tasks
    tree = ast.parse((PACKAGE / path).read_text(encoding="utf-8"))
    branches = [(line, s) for line, s in string_tests(tree) if s in tasks]
    assert branches == [], f"dlforge/{path} branches on task names: {branches}"


def test_the_branch_finder_sees_if_and_match_on_task_names():
    code = 'if info["task"] == "forecast":\n    pass\nmatch t:\n    case "translation":\n        pass\n'
    assert sorted(s for _, s in string_tests(ast.parse(code))) == ["forecast", "translation"]
