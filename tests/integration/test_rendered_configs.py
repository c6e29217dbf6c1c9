"""Rendered files checked by the real tools: systemd-analyze, haproxy -c, keepalived -t, openssl verify."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from installer import inventory, pki, pki_material, pki_specs, render

pytestmark = pytest.mark.integration
T0 = dt.datetime.now(dt.timezone.utc)

# keepalived needs its interface to exist: these addresses live only in a netns this module creates
NETNS_INVENTORY = """
cluster: {name: tb-lb, vip: 198.18.0.100, vip_prefix: 24, interface: eth0}
registry: {hostname: registry.tb.test, address: 198.18.0.20}
hosts:
  - {name: m1, address: 198.18.0.11, roles: [master, etcd, lb]}
  - {name: m2, address: 198.18.0.12, roles: [master, etcd, lb]}
  - {name: m3, address: 198.18.0.13, roles: [master, etcd, lb]}
  - {name: n1, address: 198.18.0.21, roles: [node]}
"""


def need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False, **kw)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Inventory, PKI and rendered files of the netns test site."""
    d = tmp_path_factory.mktemp("site")
    (d / "inventory.yaml").write_text(NETNS_INVENTORY)
    inv = inventory.load(d / "inventory.yaml")
    p = pki.Pki(d / "state", clock=lambda: T0)
    p.ensure(inv)
    rendered = render.render_all(inv, pki_files={h.name: pki_material.material_for(p, inv, h) for h in inv.hosts})
    return inv, p, rendered


# ------------------------------------------------------------------ systemd units

def exec_binaries(unit_text):
    """Absolute paths of the programs a unit's Exec*= lines run (prefixes like '-' stripped)."""
    out = set()
    for line in unit_text.splitlines():
        m = re.match(r"^Exec[A-Za-z]*=[-@:+!]*(/\S+)", line)
        if m:
            out.add(m.group(1))
    return out


def scratch_root(tmp_path: Path, units: dict) -> Path:
    """A root with the machine's own units, ours in /etc/systemd/system and a stub for every Exec binary."""
    root = tmp_path / "root"
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    # the docker RPM's own unit, which our drop-in extends
    (root / "usr/lib/systemd/system/docker.service").write_text(
        "[Unit]\nDescription=docker (stand-in)\n[Service]\nExecStart=/usr/bin/dockerd -H fd://\n")
    units = dict(units)
    units["/usr/lib/systemd/system/docker.service"] = (root / "usr/lib/systemd/system/docker.service").read_text()
    for path, content in units.items():
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(content)
        for b in exec_binaries(content):
            stub = root / b.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\n")
            stub.chmod(0o755)
    return root


def verify_units(tmp_path, units):
    root = scratch_root(tmp_path, units)
    names = sorted({Path(p).name if p.endswith(".service") else Path(p).parent.name[:-2]
                    for p in units if p.startswith("/etc/systemd/system/")})
    r = run(["systemd-analyze", "verify", "--man=no", f"--root={root}", *names])
    return r, names


@pytest.mark.parametrize("host", ["m1", "n1"])
def test_systemd_analyze_verify_every_unit(site, tmp_path, host):
    need("systemd-analyze")
    units = {p: f.content.decode() for p, f in site[2][host].items() if p.startswith("/etc/systemd/system/")}
    r, names = verify_units(tmp_path, units)
    assert len(names) >= 4
    # unknown keys are only warnings with rc 0 (TESTBED 9): any stderr is a failure
    assert r.returncode == 0 and r.stderr == "", f"{names}\n{r.stderr}"


def test_systemd_analyze_check_can_fail(tmp_path):
    need("systemd-analyze")
    r, _ = verify_units(tmp_path, {"/etc/systemd/system/x.service": "[Service]\nExecStart=/usr/bin/x\nFooBar=1\n"})
    assert r.stderr != ""


# ------------------------------------------------------------------ haproxy, keepalived

def test_haproxy_accepts_the_config(site, tmp_path):
    need("haproxy")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_bytes(site[2]["m1"]["/etc/haproxy/haproxy.cfg"].content)
    r = run(["haproxy", "-c", "-f", str(cfg)])
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture
def netns():
    """A throwaway network namespace with eth0 (one end of a veth pair) on 198.18.0.0/24."""
    need("ip")
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    name = f"rk{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
        for cmd in (["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
                    ["addr", "add", "198.18.0.11/24", "dev", "eth0"], ["link", "set", "eth0", "up"]):
            subprocess.run(["ip", "-n", name, *cmd], check=True, timeout=10)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=10, check=False)


@pytest.mark.parametrize("host", ["m1", "m2", "m3"])
def test_keepalived_accepts_the_config(site, tmp_path, netns, host):
    need("keepalived")
    conf = tmp_path / "keepalived.conf"
    conf.write_bytes(site[2][host]["/etc/keepalived/keepalived.conf"].content)
    r = run(["ip", "netns", "exec", netns, "keepalived", "-t", "-f", str(conf)])
    assert r.returncode == 0 and "WARNING" not in r.stdout + r.stderr, r.stdout + r.stderr


# ------------------------------------------------------------------ openssl

def test_openssl_verifies_every_certificate_and_its_names(site):
    need("openssl")
    inv, p, _ = site
    for spec in p.specs(inv):
        ca = str(p.crt_path(spec.ca))  # etcd's certificates come from the etcd CA, the rest from the site CA
        crt = str(p.crt_path(spec.name))
        purposes = (["sslserver"] if spec.server else []) + (["sslclient"] if spec.client else [])
        for purpose in purposes:
            r = run(["openssl", "verify", "-CAfile", ca, "-purpose", purpose, crt])
            assert r.returncode == 0 and r.stdout.strip().endswith(": OK"), (spec.name, r.stdout + r.stderr)
        if spec.ca == pki_specs.ETCD_CA:  # and never through the site CA, whose key the masters hold
            r = run(["openssl", "verify", "-CAfile", str(p.crt_path(pki_specs.SITE_CA)), crt])
            assert r.returncode != 0, spec.name
        r = run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", crt])
        found = set(re.findall(r"(DNS:[^,\s]+|IP Address:[^,\s]+)", r.stdout))
        want = {f"DNS:{d}" for d in spec.dns} | {f"IP Address:{i}" for i in spec.ips}
        assert found == want, spec.name
        r = run(["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", crt])
        assert f"CN={spec.cn}" in r.stdout, spec.name


def test_openssl_reads_keys_and_they_match(site):
    need("openssl")
    _, p, _ = site
    for name in ("apiserver", "admin", "etcd-m1"):
        mod_crt = run(["openssl", "x509", "-noout", "-modulus", "-in", str(p.crt_path(name))]).stdout
        mod_key = run(["openssl", "rsa", "-noout", "-modulus", "-in", str(p.key_path(name))]).stdout
        assert mod_crt and mod_crt == mod_key, name
