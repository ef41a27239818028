"""The package's import graph has no cycles, and its few function-level imports say why they are there.

The graph is read from the source with `ast` (nothing is imported): every `import` and `from ...
import` of `hilserl_ray` modules, at module level and inside functions, with relative imports
resolved and `from hilserl_ray.a import b` pointing at the submodule `a.b` when there is one (else
at the package `a`). Imports under `if TYPE_CHECKING:` never run and are left out.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "hilserl_ray"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module
    path: Path
    line: int
    end_line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The package modules one import statement loads (by name), resolved as Python would."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        parent = ".".join(base + ([node.module] if node.module else []))
    else:
        parent = node.module or ""
    out = []
    for a in node.names:
        sub = f"{parent}.{a.name}"
        if sub in MODULES:
            out.append(sub)
        elif parent in MODULES:
            out.append(parent)
    return list(dict.fromkeys(out))


def _edges_of(module: str, path: Path) -> list[Edge]:
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    edges: list[Edge] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, in_function)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target in _targets(node, module, is_package):
                if target != module:
                    edges.append(
                        Edge(module, target, path, node.lineno, node.end_lineno or node.lineno, in_function)
                    )
            return
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return edges


EDGES = [e for m, p in MODULES.items() for e in _edges_of(m, p)]


def _where(e: Edge) -> str:
    kind = "in a function" if e.in_function else "module level"
    return f"{e.path.relative_to(ROOT.parent)}:{e.line} ({kind})"


def _components(graph: dict[str, dict[str, Edge]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def _cycle_through(start: str, members: set[str], graph: dict[str, dict[str, Edge]]) -> list[Edge]:
    """A shortest cycle from `start` back to itself inside one component, as its edges."""
    prev: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w, e in sorted(graph[v].items()):
                if w not in members:
                    continue
                if w == start:
                    path = [e]
                    while path[0].source != start:
                        path.insert(0, prev[path[0].source])
                    return path
                if w not in prev:
                    prev[w] = e
                    nxt.append(w)
        frontier = nxt
    return []


def import_graph() -> dict[str, dict[str, Edge]]:
    graph: dict[str, dict[str, Edge]] = {m: {} for m in MODULES}
    for e in EDGES:
        graph[e.source].setdefault(e.target, e)  # the first import of a target names it
    return graph


def test_the_graph_resolves_submodules_and_packages():
    graph = import_graph()
    assert len(MODULES) > 50
    assert "hilserl_ray.errors" in graph["hilserl_ray.train"]
    # `from hilserl_ray.buffer import batch as batching`: the submodule, not the package
    assert "hilserl_ray.buffer.batch" in graph["hilserl_ray.buffer.replay"]
    # `from hilserl_ray.policy import SACAgent` (a name): the package, whose __init__ runs
    assert "hilserl_ray.policy" in graph["hilserl_ray.runtime.learner"]


def test_relative_imports_resolve_as_python_does():
    def targets(source: str, module: str, is_package: bool = False) -> list[str]:
        return _targets(ast.parse(source).body[0], module, is_package)

    assert targets("from . import batch", "hilserl_ray.buffer.replay") == ["hilserl_ray.buffer.batch"]
    assert targets("from .replay import ReplayBuffer", "hilserl_ray.buffer", True) == [
        "hilserl_ray.buffer.replay"
    ]
    assert targets("from .. import errors", "hilserl_ray.buffer.replay") == ["hilserl_ray.errors"]
    assert targets("from ..policy import SACAgent", "hilserl_ray.runtime.learner") == ["hilserl_ray.policy"]
    assert targets("import hilserl_ray.so101 as so101", "hilserl_ray.train") == ["hilserl_ray.so101"]


def test_no_import_cycles():
    graph = import_graph()
    report = []
    for comp in _components(graph):
        cycle = _cycle_through(comp[0], set(comp), graph)
        names = " -> ".join([e.source for e in cycle] + [cycle[0].source])
        lines = "\n".join(f"      {e.source} -> {e.target}  at {_where(e)}" for e in cycle)
        report.append(f"  cycle among {len(comp)} modules ({', '.join(comp)}):\n    {names}\n{lines}")
    assert not report, "import cycles in hilserl_ray/:\n" + "\n".join(report)


def _comment_lines(path: Path) -> dict[int, bool]:
    """Line -> whether the comment is the whole line (True) or trails code (False)."""
    out: dict[int, bool] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.start[0] not in code_lines
        elif tok.type not in (
            tokenize.NL,
            tokenize.NEWLINE,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENDMARKER,
        ):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    return out


def test_function_level_imports_of_the_package_give_a_reason():
    comments = {p: _comment_lines(p) for p in MODULES.values()}
    bare = []
    for e in EDGES:
        if not e.in_function:
            continue
        c = comments[e.path]
        reason = any(line in c for line in range(e.line, e.end_line + 1)) or c.get(e.line - 1, False)
        if not reason:
            bare.append(f"  {_where(e)}: imports {e.target}")
    bare = sorted(set(bare))
    assert not bare, (
        "function-level imports of hilserl_ray modules without a '# reason' comment on the line or the line "
        "above (move them to the top of the module, or say why they must stay):\n" + "\n".join(bare)
    )
