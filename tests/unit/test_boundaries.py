"""The installer runs offline: nothing under installer/ may import bundler (DESIGN.md)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_installer_never_imports_bundler():
    offenders = [
        f"{p.relative_to(ROOT)} imports {m}"
        for p in sorted((ROOT / "installer").rglob("*.py"))
        for m in imported_modules(p)
        if m == "bundler" or m.startswith("bundler.")
    ]
    assert offenders == []


def test_the_check_can_fail(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import os\nfrom bundler.spec import load\n")
    assert "bundler.spec" in list(imported_modules(bad))
