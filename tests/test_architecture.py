"""The shape of the house, checked on every run (issue 12): each layer imports only the layers below
it, no import cycle, no private name imported from another module, no SQL outside the store.

    entry      api/ (routers), cli, backends, demo, integrations/   thin: parse, call a service, format
    services   services/                                           the use cases: one API for HTTP and CLI
    store      store/ (DuckDB: the only SQL), lake/ beside it
    domain     records, batch, tokenclasses, ratecard, pricing, timewindows, budgets, webhook_urls,
               signing, access, otlp, reconcile, reservations       pure rules
    base       errors, settings

The client (`metering.client`) runs in the gateway's process: it imports nothing of the server, and
only entry points (the LiteLLM integration) import it.
A new module must be placed in a layer here, or this test fails.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "metering"
LAYERS = ("base", "domain", "store", "services", "entry")
DOMAIN = {"records", "batch", "tokenclasses", "ratecard", "pricing", "timewindows", "budgets", "webhook_urls",
          "signing", "access", "otlp", "reconcile", "reservations"}


def layer_of(module: str) -> str:
    parts = module.split(".")[1:]  # after "metering"
    head = parts[0] if parts else "__init__"
    if head in ("errors", "settings", "__init__"):
        return "base"
    if head in DOMAIN:
        return "domain"
    if head in ("store", "lake"):
        return "store"
    if head == "services":
        return "services"
    if head in ("api", "cli", "backends", "demo", "integrations", "__main__"):
        return "entry"
    if head == "client":
        return "client"
    raise AssertionError(f"{module} is in no layer: add it to tests/test_architecture.py")


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: Path, module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names, line) for every import outside `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, list[str], int]] = []
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, [], child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [alias.name for alias in child.names]
                submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in ALL]
                if submodules:
                    found.extend((s, [], child.lineno) for s in submodules)
                found.append((base, [n for n in names if f"{base}.{n}" not in ALL], child.lineno))
            visit(child)

    visit(tree)
    return [(m, names, line) for m, names, line in found if m == "metering" or m.startswith("metering.")]


ALL = modules()


def graph() -> dict[str, set[str]]:
    return {m: {target for target, _, _ in imports(p, m) if target in ALL and target != m} for m, p in ALL.items()}


def test_every_module_is_in_a_layer():
    for module in ALL:
        layer_of(module)


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for module, path in ALL.items():
        mine = layer_of(module)
        for target, _, line in imports(path, module):
            if target not in ALL:
                continue
            theirs = layer_of(target)
            if mine == "client" or theirs == "client":  # the gateway side: only entry points use the client
                if mine != theirs and mine != "entry":
                    wrong.append(f"{path.name}:{line} {module} ({mine}) imports {target} ({theirs})")
                continue
            if LAYERS.index(theirs) > LAYERS.index(mine):
                wrong.append(f"{path.name}:{line} {module} ({mine}) imports {target} ({theirs})")
    assert not wrong, "\n".join(wrong)


def test_there_is_no_import_cycle():
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
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

    for v in edges:
        if v not in index:
            connect(v)
    # The store's connection owner starts its writer thread, which reads the owner only for typing.
    allowed = [["metering.store.db", "metering.store.writer"]]
    assert [c for c in cycles if c not in allowed] == []


def test_no_private_name_is_imported_from_another_module():
    wrong = [f"{path.name}:{line} imports {name} from {target}"
             for module, path in ALL.items() for target, names, line in imports(path, module)
             for name in names if name.startswith("_") and not name.startswith("__")]
    assert not wrong, "\n".join(wrong)


SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+TABLE)\b", re.I | re.S)


@pytest.mark.parametrize("module", sorted(m for m in ALL if layer_of(m) not in ("store",)))
def test_sql_lives_only_in_the_store(module):
    """String constants that are SQL statements appear only in store/ (and lake/, beside it)."""
    tree = ast.parse(ALL[module].read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = [node.lineno for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value)
             and id(node) not in docstrings]
    assert not found, f"{module} holds SQL at lines {found}"


def test_no_module_is_much_over_400_lines_unless_it_is_one_cohesive_thing():
    # the CLI: one argument parser and one function per command; the spool: one durable queue on disk
    cohesive = {"metering.cli", "metering.client._spool"}
    long = {m: n for m, p in ALL.items() if (n := len(p.read_text().splitlines())) > 450 and m not in cohesive}
    assert not long, long
