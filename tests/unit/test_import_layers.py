"""The import direction of DESIGN.md section 2, checked on the source (a small AST test):
common <- protocol <- storage <- replication; frontend -> common, protocol; client -> common;
nothing imports cli."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "ambry"

ALLOWED = {
    "common": {"common"},
    "native": {"native"},
    "protocol": {"common", "protocol"},
    "storage": {"common", "protocol", "storage", "native"},
    "replication": {"common", "protocol", "storage", "native", "replication"},
    "frontend": {"common", "protocol", "frontend"},
    "client": {"common", "client"},
    "testing": {"common", "protocol", "storage", "native", "replication", "frontend",
                "client", "testing"},
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
