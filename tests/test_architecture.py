"""The layout's rules, checked on the source: imports point downward with no cycle, pocketlm's own
imports sit at the top of files, nothing imports the CLI dispatcher, argparse lives only in CLI
modules, and no module outgrows ~600 lines of logic (data tables aside)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "pocketlm"
MAX_LOGIC_LINES = 600
# argparse is CLI code; the recipe override parser is part of the recipe contract (`--FIELD VALUE`,
# pretrain's `--phases.NAME.FIELD` / `--model.FIELD`).
ARGPARSE_ALLOWED = {"pocketlm.cli", "pocketlm.cli_forms", "pocketlm.train.recipe", "pocketlm.train.pretrain"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _resolve(target: str) -> str | None:
    """The pocketlm module an import of `target` executes (a name inside a module resolves to it)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _is_type_checking_block(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports_of(name: str) -> list[tuple[str, ast.stmt, bool]]:
    """(imported pocketlm module, node, at module level) for every import in `name`'s source."""
    out = []
    top = set(map(id, TREES[name].body))
    type_only = {id(n) for block in TREES[name].body if _is_type_checking_block(block)
                 for n in ast.walk(block)}
    for node in ast.walk(TREES[name]):
        if id(node) in type_only:  # `if TYPE_CHECKING:` imports never run: annotations only
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{a.name}" for a in node.names]
        for t in targets:
            if t == "pocketlm" or t.startswith("pocketlm."):
                mod = _resolve(t)
                if mod and mod != name:
                    out.append((mod, node, id(node) in top))
    return out


def graph() -> dict[str, set[str]]:
    """Module -> modules it imports; importing a.b.c also runs the __init__ of a.b (and a)."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for name in MODULES:
        for mod, _, _ in imports_of(name):
            edges[name].add(mod)
            parent = mod.rpartition(".")[0]
            while parent and parent != "pocketlm":
                if parent != name and not name.startswith(parent + "."):
                    edges[name].add(parent)
                parent = parent.rpartition(".")[0]
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_pocketlm_imports_have_no_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_own_imports_are_at_the_top_of_files():
    nested = [f"{name}:{node.lineno} imports {mod}" for name in MODULES
              for mod, node, at_top in imports_of(name) if not at_top]
    assert not nested, "pocketlm imports inside functions hide the dependency graph:\n" + "\n".join(nested)


def test_nothing_imports_the_cli_dispatcher():
    users = [name for name in MODULES if any(mod == "pocketlm.cli" for mod, _, _ in imports_of(name))]
    assert not users


def test_argparse_lives_in_cli_modules():
    offenders = []
    for name, tree in TREES.items():
        if name.endswith(".cli") or name in ARGPARSE_ALLOWED:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names)) or \
                    (isinstance(node, ast.ImportFrom) and node.module == "argparse"):
                offenders.append(f"{name}:{node.lineno}")
    assert not offenders, "library modules import argparse: " + ", ".join(offenders)


def logic_lines(path: Path) -> int:
    """Non-blank lines outside module-level data tables (assignments of literal containers)."""
    tree = ast.parse(path.read_text())
    table_lines: set[int] = set()
    for node in tree.body:
        value = getattr(node, "value", None)
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and value is not None:
            try:
                ast.literal_eval(value)
            except ValueError:
                continue
            table_lines.update(range(node.lineno, node.end_lineno + 1))
    lines = path.read_text().splitlines()
    return sum(1 for i, line in enumerate(lines, 1) if line.strip() and i not in table_lines)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_stays_readable_in_size(name):
    assert logic_lines(MODULES[name]) <= MAX_LOGIC_LINES
