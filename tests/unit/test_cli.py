"""Both CLIs: --help everywhere, --version, errors printed without tracebacks, exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*args, cwd=ROOT):
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("prog", ["bundler", "installer"])
def test_version_and_help(prog):
    r = run(prog, "--version")
    assert r.returncode == 0 and r.stdout.startswith(f"{prog} 0.")
    r = run(prog, "--help")
    assert r.returncode == 0 and "validate" in r.stdout


def test_validate_ok_json():
    r = run("bundler", "validate", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "k8s"
    r = run("installer", "validate", "inventory.example.yaml", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["hosts"]) == 5


def test_bad_spec_exit_2_no_traceback(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: k8s\nversion: 1\nbinaries: []\nrpms: {repos: [], packages: []}\nimages: [{ref: 'A:b'}]\n")
    r = run("bundler", "validate", str(p))
    assert r.returncode == 2
    assert "images[0].ref (line 5): not a valid image reference" in r.stderr
    assert "Traceback" not in r.stderr and "hint:" in r.stderr


def test_missing_inventory_is_an_error_not_a_traceback(tmp_path):
    r = run("installer", "validate", str(tmp_path / "nope.yaml"))
    assert r.returncode == 1 and "inventory not found" in r.stderr and "Traceback" not in r.stderr
    r = run("installer", "--debug", "validate", str(tmp_path / "nope.yaml"))
    assert "Traceback" in r.stderr
