"""Harbor install mode: harbor.cfg rendering, generated secrets, the registry host's desired state and plan steps."""

from __future__ import annotations

import configparser
import hashlib
import io
import stat
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Dict

import pytest
import yaml

from contract.errors import Error
from installer import etcd_auth, pki_material, plan_model, plan_rules, render
from installer import harbor_install as H
from installer import inventory as inventory_mod
from installer import plan as P
from installer.facts import Facts, FileState, UnitState
from installer.pki import Pki
from installer.render import flannel_network_config
from tests.fixtures.upstream import content

INV = {
    "cluster": {"name": "t", "vip": "198.18.0.100"},
    "ssh": {"user": "root"},
    "registry": {"mode": "install", "hostname": "harbor.site.test", "address": "198.18.0.20",
                 "ssh": {"user": "admin", "port": 2222}},
    "hosts": [{"name": "h1", "address": "198.18.0.11", "roles": ["master", "etcd", "lb", "node"]}],
}

AUTH_ON = {etcd_auth.PROBE_MEMBER: 1, etcd_auth.PROBE_ADMIN: 0}  # etcd v3 authentication on (converged)


def load(tmp_path: Path, **registry) -> inventory_mod.Inventory:
    doc = yaml.safe_load(yaml.safe_dump(INV))
    doc["registry"].update(registry)
    p = tmp_path / f"inv-{len(list(tmp_path.glob('inv-*')))}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return inventory_mod.load(p)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def parse_cfg(data: bytes) -> Dict[str, str]:
    """harbor.cfg as Harbor's prepare reads it (RawConfigParser under a fake section)."""
    cp = configparser.RawConfigParser()
    cp.read_string("[configuration]\n" + data.decode())
    return dict(cp.items("configuration"))


@pytest.fixture(scope="module")
def inv(tmp_path_factory):
    return load(tmp_path_factory.mktemp("inv"))


@pytest.fixture(scope="module")
def site(tmp_path_factory, inv):
    """A state dir with the PKI, and a bundle dir with the installer tarball and docker-compose."""
    root = tmp_path_factory.mktemp("site")
    state = root / "state"
    state.mkdir()
    pki = Pki(state)
    pki.ensure(inv)
    bins = root / "bundle" / "binaries"
    bins.mkdir(parents=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as t:
        data = b"#!/bin/sh\n"
        ti = tarfile.TarInfo("harbor/install.sh")
        ti.size, ti.mode = len(data), 0o755
        t.addfile(ti, io.BytesIO(data))
    (bins / "harbor-offline-installer-v1.4.0.tgz").write_bytes(raw.getvalue())
    (bins / "docker-compose-Linux-x86_64").write_bytes(b"#!/bin/sh\necho compose\n")
    return state, pki, root / "bundle"


def make_desired(inv, site) -> plan_model.HostDesired:
    state, pki, bundle = site
    repo = {f"{plan_rules.REPO_DIR}/repodata/repomd.xml": plan_model.Source(sha(b"repomd"), "rpms/repodata/repomd.xml", 0o644)}
    d, local = H.desired(inv, bundle, {}, pki, state, {}, repo, {})
    assert set(local) == {d.harbor.installer.origin, d.binaries[H.COMPOSE_PATH].origin}
    return d


# ------------------------------------------------------------------ harbor.cfg


def test_harbor_cfg_keeps_every_key_of_harbor_14_and_sets_https_and_generated_passwords(inv):
    f = render.harbor_cfg(inv, admin_password="Adm1nPassw0rdXyz", db_password="Db1Passw0rdAbc")
    assert f.mode == 0o600
    cfg = parse_cfg(f.content)
    default = parse_cfg(content.HARBOR_CFG.encode())
    assert set(default) <= set(cfg), set(default) - set(cfg)
    crt, key = render.harbor_cert_paths(inv)
    assert cfg["hostname"] == "harbor.site.test" and cfg["ui_url_protocol"] == "https"
    assert (cfg["ssl_cert"], cfg["ssl_cert_key"]) == (crt, key) == ("/data/cert/server.crt", "/data/cert/server.key")
    assert cfg["harbor_admin_password"] == "Adm1nPassw0rdXyz"
    assert cfg["db_password"] == cfg["clair_db_password"] == "Db1Passw0rdAbc"
    assert cfg["_version"] == "1.4.0" and cfg["auth_mode"] == "db_auth"
    assert cfg["project_creation_restriction"] == "adminonly" and cfg["self_registration"] == "off"
    assert "Harbor12345" not in f.content.decode() and "root123" not in f.content.decode()


def test_harbor_cfg_certificate_paths_follow_data_dir_and_match_the_pki(tmp_path):
    inv = load(tmp_path, data_dir="/srv/harbor")
    cfg = parse_cfg(render.harbor_cfg(inv, admin_password="A1b", db_password="B2c").content)
    assert cfg["ssl_cert"] == "/srv/harbor/cert/server.crt"
    pki = Pki(tmp_path / "state")
    pki.ensure(inv)
    assert set(pki_material.registry_material(pki, inv)) == {cfg["ssl_cert"], cfg["ssl_cert_key"]}


@pytest.mark.parametrize("bad", ["", "has space", "pct%interp", "semi;colon", "hash#x"])
def test_harbor_cfg_refuses_passwords_configparser_would_mangle(inv, bad):
    with pytest.raises(ValueError):
        render.harbor_cfg(inv, admin_password=bad, db_password="Ok1")


# ------------------------------------------------------------------ secrets


def test_secret_is_generated_once_0600_and_reused(tmp_path):
    pw = H.ensure_secret(tmp_path, H.ADMIN_SECRET)
    path = H.secret_path(tmp_path, H.ADMIN_SECRET)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert pw != "Harbor12345" and len(pw) == H.PASSWORD_LENGTH and pw.isalnum()
    assert any(c.isupper() for c in pw) and any(c.islower() for c in pw) and any(c.isdigit() for c in pw)
    assert H.ensure_secret(tmp_path, H.ADMIN_SECRET) == pw
    assert H.ensure_secret(tmp_path, H.DB_SECRET) != pw
    path.chmod(0o644)
    assert H.ensure_secret(tmp_path, H.ADMIN_SECRET) == pw and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_access_uses_the_generated_password_and_the_site_ca(tmp_path, inv):
    assert H.access(inv, tmp_path, tmp_path / "ca.crt") == {"password": None, "verify": str(tmp_path / "ca.crt")}
    pw = H.admin_password(tmp_path)
    assert H.access(inv, tmp_path, tmp_path / "ca.crt")["password"] == pw
    ext = load(tmp_path, mode="external")
    assert H.access(ext, tmp_path, tmp_path / "ca.crt") == {}


# ------------------------------------------------------------------ the registry host


def test_registry_host_is_role_less_with_registry_ssh(tmp_path, inv):
    h = H.registry_host(inv)
    assert (h.name, h.address, h.roles, h.ssh.user, h.ssh.port) == ("registry", "198.18.0.20", (), "admin", 2222)
    assert inv.ssh_for(h).port == 2222
    assert plan_rules.phase_of(H.CONFIG, h) == "registry" and plan_rules.phase_of("/etc/yum.repos.d/k8s-offline.repo", h) == "packages"
    assert H.registry_host(load(tmp_path, mode="external")) is None
    doc = yaml.safe_load(yaml.safe_dump(INV))
    doc["hosts"].append({"name": "registry", "address": "198.18.0.12", "roles": ["node"]})
    p = tmp_path / "clash.yaml"
    p.write_text(yaml.safe_dump(doc))
    assert H.registry_host(inventory_mod.load(p)).name == "harbor.site.test"


def test_desired_state_of_the_registry_host(inv, site):
    d = make_desired(inv, site)
    state, pki, _ = site
    assert d.packages == ("docker-ce", "docker-ce-cli", "containerd.io") and d.units == ("docker",)
    assert d.binaries[H.COMPOSE_PATH].mode == 0o755
    assert d.binaries[H.COMPOSE_PATH].origin == "binaries/docker-compose-Linux-x86_64"
    assert d.files["/data/cert/server.key"].mode == 0o600
    assert d.files["/data/cert/server.crt"].content.endswith(pki.ca_pem())
    cfg = parse_cfg(d.files[H.CONFIG].content)
    assert cfg["harbor_admin_password"] == H.admin_password(state)
    assert "/etc/yum.repos.d/k8s-offline.repo" in d.files and d.repo
    assert d.harbor.reinstall_on == (H.CONFIG, "/data/cert/server.crt", "/data/cert/server.key")
    assert d.harbor.marker_sha256 == sha(H.marker_content(d.harbor.installer))
    assert H.MARKER in d.managed_paths()
    assert "./install.sh" in d.harbor.install_command and H.INSTALL_LOG in d.harbor.install_command
    assert make_desired(inv, site).files[H.CONFIG] == d.files[H.CONFIG]  # same secrets on every run


@pytest.mark.parametrize("registry,needle", [({"port": 5000}, "port 443"), ({"insecure": True}, "https only")])
def test_desired_state_refuses_what_harbor_14_cannot_serve(tmp_path, site, registry, needle):
    inv = load(tmp_path, **registry)
    state, pki, bundle = site
    with pytest.raises(Error) as e:
        H.desired(inv, bundle, {}, pki, state, {}, {}, {})
    assert needle in e.value.message


def test_desired_state_needs_the_installer_in_the_bundle(inv, site, tmp_path):
    state, pki, _ = site
    (tmp_path / "binaries").mkdir()
    with pytest.raises(Error) as e:
        H.desired(inv, tmp_path, {}, pki, state, {}, {}, {})
    assert "harbor-offline-installer" in e.value.message


# ------------------------------------------------------------------ plan steps


def facts(d: plan_model.HostDesired, *, fresh: bool = False, **kw) -> Facts:
    files = {} if fresh else {p: FileState(sha(f.content), f.mode, "root", "root") for p, f in d.files.items()}
    if not fresh:
        files.update({p: FileState(s.sha256, s.mode, "root", "root") for p, s in d.binaries.items()})
        files.update({p: FileState(s.sha256, s.mode, "root", "root") for p, s in d.repo.items()})
        files[d.harbor.marker] = FileState(d.harbor.marker_sha256, 0o644, "root", "root")
    units = {} if fresh else {u: UnitState("loaded", "active", "running", "enabled") for u in d.units}
    base = dict(host="registry", hostname="reg", os_id="centos", os_version="7", os_family="redhat",
                os_name="CentOS 7", arch="x86_64", kernel="3.10", time_offset=0.0,
                disk_free_kb={"/": 10 << 20, "/var": 10 << 20}, packages={} if fresh else
                {p: "1-1" for p in d.packages}, files=files, units=units, commands=frozenset({"yum", "systemctl"}),
                kernel_features=frozenset({"bridge-nf", "overlay"}),
                probes=AUTH_ON)
    base.update(kw)
    return Facts(**base)


def plan_for(inv, d: plan_model.HostDesired, f: Facts, control: plan_model.ControlState, **kw) -> plan_model.Plan:
    """A plan with only the registry host (the cluster hosts have no state: they are left out)."""
    reg = H.registry_host(inv)
    return P.build(inv, {reg.name: d}, {reg.name: plan_model.HostState(f)}, control, registry_host=reg, **kw)


def registry_steps(plan: plan_model.Plan):
    phase = next(p for p in plan.phases if p.name == "registry")
    return [(s.host, s.kind, s.target) for w in phase.waves for s in w.steps], \
        [g.target for w in phase.waves for g in w.gates]


UP = plan_model.ControlState(images_missing=(), images_total=7, harbor_up=True, harbor_detail="Harbor v1.4.0",
                    flannel_config=flannel_network_config(inventory_mod.Inventory.model_validate(INV)))


def test_fresh_registry_host_is_planned_in_order_then_project_and_seed(inv, site):
    d = make_desired(inv, site)
    plan = plan_for(inv, d, facts(d, fresh=True), plan_model.ControlState(harbor_up=False, harbor_detail="refused"))
    steps, gates = registry_steps(plan)
    kinds = [k for h, k, _ in steps if h == "registry"]
    assert set(kinds[:2]) == {"repo", "put"} and ("registry", "put", "/etc/yum.repos.d/k8s-offline.repo") in steps[:2]
    order = ["packages", "daemon-reload", "enable", "restart", "harbor-unpack", "binary", "harbor-install"]
    assert [k for k in kinds if k in order] == order
    assert {t for h, k, t in steps if k == "put"} >= {H.CONFIG, "/data/cert/server.crt", "/data/cert/server.key"}
    assert steps[-2:] == [("control", "harbor-project", "kubernetes"), ("control", "seed", "harbor.site.test")]
    assert gates == ["harbor-api"]
    phase = next(p for p in plan.phases if p.name == "registry")
    assert len(phase.waves) == 2 and phase.waves[0].hosts == ["registry"]  # project and seed only after the gate
    install = next(s for s in plan.steps if s.kind == "harbor-install")
    assert "installer unpacked" in install.reason and H.CONFIG in install.reason
    assert {c.host for c in plan.checks} == {"registry"} and not plan.problems
    cfg = next(s for s in plan.steps if s.target == H.CONFIG)
    assert cfg.diff is None or "secret" in cfg.diff
    text = plan.text()
    assert "unpack /opt/harbor" in text and "run /opt/harbor" in text
    assert d.files[H.CONFIG].content.decode() not in text


def test_converged_registry_host_with_harbor_up_plans_nothing(inv, site):
    d = make_desired(inv, site)
    plan = plan_for(inv, d, facts(d), UP)
    assert registry_steps(plan) == ([], [])
    assert plan.empty


def test_harbor_not_answering_reruns_only_install_sh(inv, site):
    d = make_desired(inv, site)
    plan = plan_for(inv, d, facts(d), plan_model.ControlState(harbor_up=False, harbor_detail="ConnectionError"))
    steps, gates = registry_steps(plan)
    assert steps[0] == ("registry", "harbor-install", "/opt/harbor") and gates == ["harbor-api"]
    assert "does not answer (ConnectionError)" in plan.steps[0].reason
    assert steps[1:] == [("control", "harbor-project", "kubernetes"), ("control", "seed", "harbor.site.test")]


@pytest.mark.parametrize("path", [H.CONFIG, "/data/cert/server.key"])
def test_changed_config_or_certificate_rewrites_it_and_reruns_install_sh(inv, site, path):
    d = make_desired(inv, site)
    f = facts(d)
    files = dict(f.files)
    files[path] = replace(files[path], sha256=sha(b"edited"))
    steps, gates = registry_steps(plan_for(inv, d, replace(f, files=files), UP))
    assert steps == [("registry", "put", path), ("registry", "harbor-install", "/opt/harbor")]
    assert gates == ["harbor-api"]


def test_mode_only_change_does_not_rerun_install_sh(inv, site):
    d = make_desired(inv, site)
    f = facts(d)
    files = dict(f.files)
    files[H.CONFIG] = replace(files[H.CONFIG], mode=0o644)
    assert registry_steps(plan_for(inv, d, replace(f, files=files), UP)) == ([("registry", "put", H.CONFIG)], [])


def test_new_installer_in_the_bundle_is_unpacked_and_installed(inv, site):
    d = make_desired(inv, site)
    f = facts(d)
    files = dict(f.files)
    files[H.MARKER] = FileState(sha(b"older  harbor-offline-installer-v1.3.0.tgz\n"), 0o644, "root", "root")
    steps, _ = registry_steps(plan_for(inv, d, replace(f, files=files), UP))
    assert steps == [("registry", "harbor-unpack", "/opt/harbor"), ("registry", "harbor-install", "/opt/harbor")]
    unpack = next(s for s in plan_for(inv, d, replace(f, files=files), UP).steps if s.kind == "harbor-unpack")
    assert unpack.source == d.harbor.installer and "differs" in unpack.reason


def test_stopped_docker_is_started_without_reinstalling_harbor(inv, site):
    d = make_desired(inv, site)
    f = facts(d, units={"docker": UnitState("loaded", "inactive", "dead", "enabled")})
    assert registry_steps(plan_for(inv, d, f, UP))[0] == [("registry", "restart", "docker")]


def test_add_node_focus_defers_the_registry_host(inv, site):
    d = make_desired(inv, site)
    plan = plan_for(inv, d, facts(d, fresh=True), plan_model.ControlState(harbor_up=False), focus=["h1"])
    steps, _ = registry_steps(plan)
    assert all(h == "control" for h, _, _ in steps)
    assert any(x.startswith("registry: ") for x in plan.deferred)


# ------------------------------------------------------------------ executor: the wait for Harbor's API


def test_harbor_gate_timeout_says_why_and_shows_the_install_log_tail(monkeypatch, inv, tmp_path):
    from types import SimpleNamespace

    import requests

    from installer import apply as A
    from installer import checks
    from installer.hosts.connector import Result
    from installer.state import StateDir

    class Conn:
        def run(self, cmd, **kw):
            assert H.INSTALL_LOG in cmd
            return Result(0, "== install.sh 1\nold run\n== install.sh 2\n[Step 4]: starting Harbor ...\n"
                             "nginx: cannot load certificate\n", "")

    monkeypatch.setattr(checks, "registry_base", lambda inv: "https://127.0.0.1:9")  # nothing listens: refused
    site = SimpleNamespace(inv=inv, pki=None, registry_access={"verify": True}, state=StateDir(tmp_path).ensure())
    opts = A.Options(connector_for=None, session=requests.Session(), harbor_timeout=0.0, sleep=lambda s: None)
    gate = plan_model.Step(plan_model.CONTROL, "gate", "harbor-api", "Harbor answers", items=("registry",))
    with pytest.raises(Error) as e:
        A.Executor(site, {"registry": Conn()}, opts)._gate(gate)
    assert "registry: health gate harbor-api not reached within 0 s: ConnectionError" in e.value.message
    assert e.value.details[-3:] == [f"{H.INSTALL_LOG}: {ln}" for ln in (
        "== install.sh 2", "[Step 4]: starting Harbor ...", "nginx: cannot load certificate")]
