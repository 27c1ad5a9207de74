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
