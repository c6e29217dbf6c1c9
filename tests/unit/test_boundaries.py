"""The installer runs offline: nothing under installer/ may import bundler (DESIGN.md); the bundler imports nothing
of the installer either; contract/, which both programs share, imports neither of them."""

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


def offenders(package, forbidden):
    return [
        f"{p.relative_to(ROOT)} imports {m}"
        for p in sorted((ROOT / package).rglob("*.py"))
        for m in imported_modules(p)
        if m.split(".")[0] in forbidden
    ]


def test_installer_never_imports_bundler():
    assert offenders("installer", {"bundler"}) == []


def test_bundler_never_imports_installer():
    """What the bundler shares with the installer (errors, documents, digest, progress, the bundle format, the
    verify command's body, the version) lives in contract/."""
    assert offenders("bundler", {"installer"}) == []


def test_contract_imports_neither_installer_nor_bundler():
    assert sorted((ROOT / "contract").glob("*.py")), "contract/ is where the shared modules live"
    assert offenders("contract", {"installer", "bundler"}) == []


def test_contract_has_no_cli_and_no_host_access():
    """The shared package is a library: no argument parsing, no processes, no SSH (the two programs do that)."""
    banned = {"typer", "click", "argparse", "subprocess", "paramiko", "socket"}
    assert offenders("contract", banned) == []


def test_the_check_can_fail(tmp_path, monkeypatch):
    bad = tmp_path / "x.py"
    bad.write_text("import os\nfrom bundler.spec import load\n")
    assert "bundler.spec" in list(imported_modules(bad))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("from installer.cli import app\nimport subprocess\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert offenders("pkg", {"installer"}) == ["pkg/m.py imports installer.cli"]
    assert offenders("pkg", {"subprocess"}) == ["pkg/m.py imports subprocess"]
