"""The import direction of DESIGN.md section 2, checked on the source (a small AST test):
common <- protocol <- storage <- replication; frontend -> common, protocol; client -> common;
nothing imports cli."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "ambry"

ALLOWED = {
    "common": {"common"},
    # the daemons' shared asyncio machinery (byte budget, config reload), out of common
    "runtime": {"common", "runtime"},
    "native": {"native"},
    "protocol": {"common", "protocol"},
    # ec: the fragment file format (fragments.py) and the layout of encoded segments
    "storage": {"common", "protocol", "storage", "native", "runtime", "ec"},
    "replication": {"common", "protocol", "storage", "native", "replication"},
    "frontend": {"common", "protocol", "frontend", "runtime"},
    "client": {"common", "client"},
    # erasure coding's pure parts and codec: storage, replication and frontend build on it
    "ec": {"common", "ec"},
    # the warm tier's node component: encoding coordinator, fragment reads over the network
    "warm": {"common", "protocol", "storage", "ec", "warm"},
    "testing": {"common", "protocol", "storage", "native", "replication", "frontend",
                "client", "testing", "runtime", "ec", "warm"},
    "cli": None,  # may import anything
}


def _ambry_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for n in names:
            parts = n.split(".")
            if parts[0] == "ambry" and len(parts) > 1:
                out.add(parts[1])
    return out


def test_import_direction() -> None:
    problems = []
    for pkg, allowed in ALLOWED.items():
        for f in (ROOT / pkg).rglob("*.py"):
            used = _ambry_imports(f)
            if "cli" in used and pkg != "cli":
                problems.append(f"{f.relative_to(ROOT)} imports ambry.cli")
            if allowed is not None and used - allowed:
                problems.append(f"{f.relative_to(ROOT)} imports {sorted(used - allowed)}")
    assert not problems, problems


def test_the_sdk_loads_nothing_but_ambry_common() -> None:
    # the AST check above sees only direct imports; this one runs the import in a fresh
    # interpreter and looks at every ambry module it loaded (the SDK must install and run on
    # a machine that has no storage node or frontend code paths set up)
    import json
    import subprocess
    import sys

    code = ("import json, sys, ambry.client; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('ambry.'))))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, cwd=ROOT.parent).stdout
    loaded = {m.split(".")[1] for m in json.loads(out)}
    assert loaded <= {"common", "client"}, sorted(loaded)


# ------------------------------------------------------------------ the module graph
# Edges between ambry's own modules, every import counted (module level, inside functions,
# under TYPE_CHECKING): a circle is a circle whenever its halves load.

def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _module_graph() -> dict[str, set[str]]:
    files = {_module_name(f): f for f in ROOT.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in files:  # `import a.b.c` of a name inside a module
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, f in files.items():
        out: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package of this module
                    pkg = mod.split(".")
                    if f.name != "__init__.py":
                        pkg.pop()
                    pkg = pkg[:len(pkg) - (node.level - 1)]
                    base = ".".join([*pkg, base] if base else pkg)
                # `from a.b import c`: the submodule a.b.c if there is one, else a.b
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            else:
                continue
            for t in targets:
                if t.startswith("ambry") and (r := resolve(t)) is not None and r != mod:
                    out.add(r)
        graph[mod] = out
    return graph


def _circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.add(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(scc)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


#: Circles known and owned by an open item: each must still exist (the test says when one is
#: gone, so its entry goes too); no other circle may appear. (containers <-> router is gone:
#: the registry takes a ``containers.NameOps`` protocol, issue 15.)
KNOWN_CIRCLES: list[set[str]] = []


def test_no_import_circles_in_ambry() -> None:
    # storage/compaction.py and storage/replica.py imported each other (compaction used the
    # replica's private locks and helpers; the replica called compaction's roll-forward)
    circles = _circles(_module_graph())
    unknown = [sorted(c) for c in circles if c not in KNOWN_CIRCLES]
    assert not unknown, f"import circles: {unknown}"
    gone = [sorted(c) for c in KNOWN_CIRCLES if c not in circles]
    assert not gone, f"circles fixed: drop them from KNOWN_CIRCLES: {gone}"


def test_the_circle_check_sees_a_circle() -> None:
    # the checker itself: a circle through a function-level import counts
    g = {"ambry.a": {"ambry.b"}, "ambry.b": {"ambry.c"}, "ambry.c": {"ambry.a"},
         "ambry.d": {"ambry.a"}}
    assert _circles(g) == [{"ambry.a", "ambry.b", "ambry.c"}]


def test_replication_uses_only_the_declared_storage_api() -> None:
    # replication imported Replica, Entry, NameEntry, RecordType and put_location from
    # storage internals and asserted it was handed a StorageNode
    graph = _module_graph()
    leaks = {mod: sorted(t for t in targets
                         if t.startswith("ambry.storage") and t != "ambry.storage.api")
             for mod, targets in graph.items() if mod.startswith("ambry.replication")}
    assert not {m: t for m, t in leaks.items() if t}, leaks
    assert any("ambry.storage.api" in t for m, t in graph.items()
               if m.startswith("ambry.replication")), "the check sees replication's imports"


def test_storage_does_not_import_the_node_client() -> None:
    # StorageNode.link() (called by nothing) kept storage importing protocol.client
    graph = _module_graph()
    users = sorted(m for m, t in graph.items()
                   if m.startswith("ambry.storage") and "ambry.protocol.client" in t)
    assert not users, users


# ------------------------------------------------------------------ common stays pure
#: Third-party and stdlib modules that mean runtime machinery (an event loop, an HTTP stack,
#: a metrics registry). ``yaml`` is one too, with one exception: ``common/config.py`` parses
#: the config file's text into values (``load_config``), as a value parser, nothing more.
RUNTIME_MODULES = {"asyncio", "aiohttp", "yaml", "prometheus_client", "uvloop"}
YAML_PARSER = "common/config.py"


def _top_level_imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_common_holds_values_and_pure_decisions_only() -> None:
    # common/reload.py (asyncio, yaml, prometheus) and common/budget.py (asyncio) were
    # runtime machinery in the package of values; they live in ambry/runtime now
    problems = {}
    for f in sorted((ROOT / "common").rglob("*.py")):
        rel = str(f.relative_to(ROOT))
        bad = _top_level_imports(f) & RUNTIME_MODULES
        if rel == YAML_PARSER:
            bad -= {"yaml"}
        if bad:
            problems[rel] = sorted(bad)
    assert not problems, problems
    assert "yaml" in _top_level_imports(ROOT / YAML_PARSER), "the check sees imports"
