"""The library's parts import one way, read from the source with `ast` (imports inside functions
included, so a deferred import cannot hide an edge).

A part is a subpackage (config, data, method, training, downstream) or a top-level module (cli,
errors, metrics, ...). config is read by every stage and imports none; and no part imports
another that imports it back, directly or around a longer cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fast_electra_ds"
STAGES = {"data", "method", "training", "downstream"}


def _part_of(dotted: str, root: Path) -> str | None:
    """The part a dotted module name lies in, or None outside the package (or its root)."""
    names = dotted.split(".")
    if names[0] != root.name or len(names) < 2:
        return None
    return names[1] if (root / names[1]).is_dir() or (root / f"{names[1]}.py").is_file() else None


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """{part: the other parts it imports}."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        part = rel.parts[0].removesuffix(".py")
        package = [root.name, *rel.parts[:-1]]  # the package the file's relative imports start in
        targets = []
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([base] if base
                                                                              else []))
                # `from fast_electra_ds import cli` imports the part cli
                targets += [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            other = _part_of(target, root)
            if other is not None and other != part:
                graph.setdefault(part, set()).add(other)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            cycle = visit(nxt, path + [node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_config_imports_no_stage():
    graph = import_graph()
    assert not graph.get("config", set()) & STAGES, \
        f"config imports {sorted(graph['config'] & STAGES)}: config must import no stage"


def test_no_cycle_between_parts():
    graph = import_graph()
    assert graph["training"] >= {"config", "data", "method"}  # the graph is read at all
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle between parts: {' -> '.join(cycle)}"


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_checking_a_config_loads_no_model_framework():
    """`fast-electra config` (and every refused run) asks the mode classes about a config: the
    models are imported where a mode builds them, so the check skips transformers' ~2.5 s."""
    import subprocess
    import sys

    code = ("import sys; from fast_electra_ds.config import load_config; "
            "from fast_electra_ds.method.modes import validate_config; "
            "[validate_config(load_config('tiny', [f'mode={m}']), check_files=False) "
            "for m in ('fast-electra', 'electra', 'mlm')]; "
            "print(sorted(m for m in ('transformers', 'deepspeed') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


LIBRARY = (PACKAGE, PACKAGE.parent / "kernels" / "fast_electra_kernels",
           PACKAGE.parent / "benchmarks" / "suite")
MAX_MODULE_LINES = 450  # a module a reader can hold; the scripts in benchmarks/ are not modules


def test_no_library_module_is_over_450_lines():
    long = {str(path.relative_to(PACKAGE.parent)): n for root in LIBRARY
            for path in root.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these modules (over {MAX_MODULE_LINES} lines): {long}"
    assert sum(1 for root in LIBRARY for _ in root.rglob("*.py")) > 40  # the trees are read
