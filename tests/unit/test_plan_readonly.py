"""`installer plan` writes nothing (a fresh state dir stays missing), says what apply would create, and
`--detailed-exitcode` exits 0 (nothing to do), 2 (changes) or 1 (error). Hosts are faked at the facts level."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Dict

import pytest
import yaml
from typer.testing import CliRunner

from contract.bundle import Entry, generate_keypair, load_private_key, write_bundle
from installer import apply as apply_mod
from installer import cli, cli_common, plan_model, runlock
from installer import facts as facts_mod
from installer.hosts.connector import Result
from installer.render import flannel_network_config
from tests.fixtures.harbor import layout
from tests.typed_contents import typed
from tests.unit.test_plan import converged_facts

INV = {
    "cluster": {"name": "t", "vip": "127.0.10.100"},
    "registry": {"mode": "external", "hostname": "reg.test", "address": "127.0.10.1", "port": 5000, "insecure": True},
    "hosts": [{"name": "m1", "address": "127.0.10.11", "roles": ["master", "etcd", "lb"]},
              {"name": "n1", "address": "127.0.10.12", "roles": ["node"]}],
}
TARBALLS = {
    "kubernetes-server-linux-amd64.tar": [f"kubernetes/server/bin/{n}" for n in (
        "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet", "kube-proxy")],
    "etcd-v3.3.1-linux-amd64.tar": ["etcd-v3.3.1-linux-amd64/etcd", "etcd-v3.3.1-linux-amd64/etcdctl"],
    "flannel-v0.10.0-linux-amd64.tar": ["flanneld", "mk-docker-opts.sh"],
    "cni-plugins-amd64-v0.7.0.tar": [f"./{n}" for n in ("bridge", "flannel", "host-local", "loopback", "portmap")],
}


def _tar(members) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for name in members:
            data = f"#!/bin/sh\necho {name}\n".encode()
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o755
            t.addfile(ti, io.BytesIO(data))
    return raw.getvalue()


def signed_bundle(d: Path, files: Dict[str, bytes], **write_kw):
    """Write files as members of a signed test bundle in d/dist (keys in d/keys); write_bundle's result."""
    entries = []
    for path, data in files.items():
        src = d / "src" / path
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(data)
        entries.append(Entry(path, src, len(data), hashlib.sha256(data).hexdigest(), 0o644))
    generate_keypair(d / "keys")
    return write_bundle(d / "dist", "k8s", "1.10.3", entries, load_private_key(d / "keys" / "bundle.key"),
                        spec_sha256="0" * 64, lock_sha256="1" * 64,
                        **typed({"binary/kubernetes-server": "1.10.3"}, next(iter(files))), level=1, **write_kw)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A signed bundle with what planning reads (tarballs, spec, an empty image layout) and an inventory."""
    d = tmp_path_factory.mktemp("plan-site")
    files = {f"binaries/{n}": _tar(m) for n, m in TARBALLS.items()}
    files["bundle-spec.yaml"] = b"name: k8s\nimages: [{ref: 'k8s.gcr.io/pause-amd64:3.1', role: pause}]\n"
    layout.build_layout(d / "src" / "images", big_layer_size=1000)  # kubelet's pause image, and two others
    files.update({p.relative_to(d / "src").as_posix(): p.read_bytes()
                  for p in sorted((d / "src" / "images").rglob("*")) if p.is_file()})
    res = signed_bundle(d, files)
    inv = d / "inventory.yaml"
    inv.write_text(yaml.safe_dump(INV))
    return {"bundle": res.path, "pub": d / "keys" / "bundle.pub", "inventory": inv}


class FakeConn:
    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, cmd, **kw) -> Result:
        raise AssertionError(f"plan ran a command on {self.name}: {cmd}")

    def get(self, path: str):
        return None

    def close(self) -> None:
        pass


def fake_hosts(monkeypatch, facts_for):
    """Facts come from facts_for(host, managed paths); the control host sees a seeded registry and flannel key.

    plan must never write the hosts' hash caches: every gather is asked not to (update_cache=False)."""

    def gather(conn, managed, units, **kw):
        assert kw.get("update_cache") is False, "plan would write the hash cache on " + conn.name
        return facts_for(conn.name, managed)

    monkeypatch.setattr(facts_mod, "gather", gather)
    monkeypatch.setattr(apply_mod, "control_state", lambda site, session: plan_model.ControlState(
        images_missing=(), images_total=0, flannel_config=flannel_network_config(site.inv)))
    opts = apply_mod.Options(connector_for=lambda inv, host: FakeConn(host.name), session=None)
    monkeypatch.setattr(cli_common, "options", lambda *args, **kwargs: opts)
    return opts


def fresh_host(name: str, managed) -> facts_mod.Facts:
    """A CentOS 7 host with nothing of ours on it."""
    return converged_facts(name, plan_model.HostDesired(files={}, binaries={}, packages=(), units=()))


def snapshot(root: Path) -> Dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            out[p.relative_to(root).as_posix()] = (st.st_mode, st.st_mtime_ns, st.st_size,
                                                   p.read_bytes() if p.is_file() and not p.is_symlink() else None)
    return out


def plan(site, state: Path, *extra: str):
    r = CliRunner().invoke(cli.app, ["plan", "-b", str(site["bundle"]), "--pub", str(site["pub"]), "-i",
                                     str(site["inventory"]), "--state", str(state), *extra])
    return r


def test_plan_on_a_fresh_state_dir_creates_nothing_and_says_what_apply_would_create(site, tmp_path, monkeypatch):
    fake_hosts(monkeypatch, fresh_host)
    state = tmp_path / "state"
    r = plan(site, state)
    assert r.exit_code == 0, r.output
    assert not state.exists()  # missing stays missing
    assert list(tmp_path.iterdir()) == []
    assert f"apply would create in {state}: the state directory {state} (0700)" in r.output
    assert "site CA" in r.output and "service-account key pair" in r.output and "certificate(s): " in r.output
    assert "the verified, unpacked bundle" in r.output and "executable(s) extracted" in r.output
    # as if the certificates were there: the etcd server key is planned for the master like every other file
    assert "/etc/etcd/pki/server.key" in r.output

    r = plan(site, state, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output[r.output.index("{"):])
    assert d["changes"] is True and d["state"]["dir"] == str(state)
    assert any(x.startswith("site CA") for x in d["state"]["would_create"])
    assert not state.exists()


def test_plan_on_an_existing_state_dir_leaves_it_byte_for_byte(site, tmp_path, monkeypatch):
    import shutil

    opts = fake_hosts(monkeypatch, fresh_host)
    state = tmp_path / "state"
    # what apply leaves behind (unpacked bundle, PKI), minus a certificate and the extracted executables
    apply_mod.load_site(site["inventory"], site["bundle"], site["pub"], state, opts.out)
    shutil.rmtree(state / "binaries")
    (state / "pki" / "admin.crt").unlink()
    with runlock.hold(state, "apply"):  # an apply is running: plan does not need its lock
        before = snapshot(state)
        assert any(k.startswith("pki/") for k in before) and any(k.startswith("bundle-") for k in before)
        r = plan(site, state)
        assert r.exit_code == 0, r.output
        assert snapshot(state) == before
    line = next(ln for ln in r.output.splitlines() if ln.startswith("apply would create"))
    assert "1 certificate(s): admin" in line and "executable(s) extracted" in line
    assert "site CA" not in line and "bundle" not in line.replace("from the bundle", "")  # CA kept, bundle reused


def test_plan_errors_name_the_real_state_dir_and_leave_it_alone(site, tmp_path, monkeypatch):
    fake_hosts(monkeypatch, fresh_host)
    state = tmp_path / "state"
    (state / "pki").mkdir(parents=True)
    (state / "pki" / "apiserver.crt").write_text("x")  # certificates but no CA: refused, never replaced
    before = snapshot(state)
    r = plan(site, state)
    assert r.exit_code == 1
    assert f"{state / 'pki'} holds certificates but no ca.key" in r.output and "Traceback" not in r.output
    assert "k8s-offline-plan-" not in r.output
    assert snapshot(state) == before


def converged_for(site, state: Path, opts):
    """Facts of hosts that match the desired state of `state` exactly (as after a finished apply)."""
    s = apply_mod.load_site(site["inventory"], site["bundle"], site["pub"], state, opts.out)
    return lambda name, managed: converged_facts(name, s.desired[name])


def test_detailed_exitcode_0_nothing_to_do_2_changes_1_error(site, tmp_path, monkeypatch):
    opts = fake_hosts(monkeypatch, fresh_host)
    state = tmp_path / "state"
    facts = converged_for(site, state, opts)  # the real state dir now holds bundle, PKI and executables

    fake_hosts(monkeypatch, facts)
    assert plan(site, state, "--detailed-exitcode").exit_code == 0
    assert plan(site, state).exit_code == 0

    fake_hosts(monkeypatch, fresh_host)
    r = plan(site, state, "--detailed-exitcode")
    assert r.exit_code == 2, r.output
    assert plan(site, state).exit_code == 0  # without the flag: success is 0, as before

    # a fresh state dir with converged hosts: hosts match, yet apply would create the PKI: changes
    fake_hosts(monkeypatch, facts)
    assert plan(site, tmp_path / "other", "--detailed-exitcode").exit_code == 2

    # errors are 1, bad input (otherwise 2) included
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(dict(INV, cluster={"name": "t", "vip": "999.1.1.1"})))
    r = CliRunner().invoke(cli.app, ["plan", "-b", str(site["bundle"]), "--pub", str(site["pub"]), "-i", str(bad),
                                     "--state", str(state), "--detailed-exitcode"])
    assert r.exit_code == 1 and "cluster.vip" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli.app, ["plan", "-b", str(site["bundle"]), "--pub", str(site["pub"]), "-i", str(bad),
                                     "--state", str(state)])
    assert r.exit_code == 2
    r = CliRunner().invoke(cli.app, ["plan", "-b", str(tmp_path / "nope.tar.zst"), "--pub", str(site["pub"]), "-i",
                                     str(site["inventory"]), "--state", str(state), "--detailed-exitcode"])
    assert r.exit_code == 1 and "Traceback" not in r.output
