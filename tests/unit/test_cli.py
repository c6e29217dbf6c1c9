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


def test_render_and_certs_check(tmp_path):
    out, state = tmp_path / "out", tmp_path / "state"
    r = run("installer", "render", "-i", "inventory.example.yaml", "--out", str(out), "--state", str(state), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["files"] > 100 and (out / "k8s-master1" / "etc/etcd/etcd.conf").is_file()
    r = run("installer", "certs", "check", "-i", "inventory.example.yaml", "--state", str(state), "--json")
    assert r.returncode == 0, r.stderr
    rows = {c["name"]: c for c in json.loads(r.stdout)}
    assert rows["ca"]["status"] == "ok" and all(c["days_left"] > 300 for c in rows.values())
    # a new VIP: the check flags the apiserver certificate, a re-render reissues it
    inv = (ROOT / "inventory.example.yaml").read_text().replace("192.168.10.100", "192.168.10.101")
    (tmp_path / "inv.yaml").write_text(inv)
    r = run("installer", "certs", "check", "-i", str(tmp_path / "inv.yaml"), "--state", str(state), "--json")
    assert r.returncode == 1 and "need attention" in r.stderr
    bad = [c["name"] for c in json.loads(r.stdout) if c["status"] != "ok"]
    assert bad and all("apiserver" in n or "kubeconfig" in n or "admin" in n for n in bad), bad
