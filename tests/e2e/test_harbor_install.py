"""`installer apply` with `registry.mode: install`: Harbor (the offline installer's stand-in) on its own host.

h1 carries every cluster role, h2 is the registry host. The stand-in install.sh does what the real one does up
to `docker-compose up -d`, then starts harbor-standin.service (Harbor's API + token service over https in front
of a real docker-registry): see tests/fixtures/upstream/content.py. The tests build on each other in file order.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from contract.bundle import layout
from installer import harbor_install
from installer import inventory as inventory_mod
from installer.apply import default_session
from installer.pki import Pki
from installer.registry.client import RegistryClient
from installer.registry.harbor import HarborAPI
from installer.registry.seed import Layout
from tests.e2e import cluster

pytestmark = pytest.mark.e2e
CLUSTER, REGISTRY = 1, 2
UNIT = "harbor-standin.service"


class Site:
    """The module's testbed, bundle, inventory and state dir."""

    def __init__(self, tb, bundle: cluster.BuiltBundle, work: Path) -> None:
        self.tb, self.bundle, self.work = tb, bundle, work
        self.state = work / "state"
        self.inv_path = cluster.write_harbor_inventory(tb, work / "inventory.yaml", cluster_host=CLUSTER,
                                                       registry_host=REGISTRY)
        self.inv = inventory_mod.load(self.inv_path)
        self.known_hosts = work / "known_hosts"
        self.base = f"https://{self.inv.registry.address}:{self.inv.registry.port}"

    def args(self) -> list:
        return ["--bundle", str(self.bundle.path), "--pub", str(self.bundle.pub), "-i", str(self.inv_path),
                "--state", str(self.state), "--known-hosts", str(self.known_hosts)]

    def apply(self) -> cluster.Run:
        return cluster.installer("apply", *self.args(), timeout=900)

    @property
    def ca(self) -> str:
        return str(Pki(self.state).crt_path("ca"))

    def password(self) -> str:
        return harbor_install.secret_path(self.state, harbor_install.ADMIN_SECRET).read_text().strip()

    def images(self):
        bundle_dir = next(self.state.glob("bundle-*"))
        spec = yaml.safe_load((bundle_dir / layout.SPEC).read_text()) or {}
        naming = (spec.get("registry") or {}).get("naming", "last-component")
        return Layout(bundle_dir / layout.IMAGES_DIR).images(self.inv.registry.project, naming)

    def journal_run(self) -> list:
        lines = (self.state / "journal.jsonl").read_text().splitlines()
        entries = [json.loads(x) for x in lines]
        run = entries[-1]["run"]
        return [e for e in entries if e.get("run") == run and e.get("event") == "step"]

    def install_runs(self) -> int:
        r = self.tb.ssh(REGISTRY, f"grep -c '^== install.sh' {harbor_install.INSTALL_LOG} || true")
        return int(r.stdout.strip() or 0)


@pytest.fixture(scope="module")
def site(testbed_factory, tmp_path_factory):
    t0 = time.monotonic()
    tb = testbed_factory.create(2)
    work = tmp_path_factory.mktemp("harbor")
    bundle = cluster.build_bundle(work / "build")
    cluster.register_base_rpms(tb, (CLUSTER, REGISTRY), bundle.base_rpms)
    print(f"\nsetup: 2 hosts + bundle ({bundle.seconds:.1f} s) in {time.monotonic() - t0:.1f} s")
    yield Site(tb, bundle, work)


def _fail(run: cluster.Run) -> str:
    return f"rc={run.rc}\nstdout:\n{run.stdout[-3000:]}\nstderr:\n{run.stderr[-6000:]}"


def test_plan_shows_the_registry_host_steps(site):
    run = cluster.installer("plan", *site.args(), "--json")
    assert run.rc == 0, _fail(run)
    plan = json.loads(run.stdout)
    phase = next(p for p in plan["phases"] if p["name"] == "registry")
    steps = [(s["host"], s["kind"], s["target"]) for w in phase["waves"] for s in w["steps"]]
    reg = [s for s in steps if s[0] == "registry"]
    kinds = [k for _, k, _ in reg]
    assert kinds.index("packages") < kinds.index("harbor-unpack") < kinds.index("harbor-install"), kinds
    assert ("registry", "binary", harbor_install.COMPOSE_PATH) in reg
    assert ("registry", "put", harbor_install.CONFIG) in reg
    assert ("registry", "restart", "docker") in reg
    assert steps[-2:] == [("control", "harbor-project", "kubernetes"), ("control", "seed", cluster.HARBOR_HOSTNAME)]
    gates = [g["target"] for w in phase["waves"] for g in w["gates"]]
    assert gates == ["harbor-api"]
    cfg = next(s for w in phase["waves"] for s in w["steps"] if s["target"] == harbor_install.CONFIG)
    assert "diff" not in cfg or "secret" in cfg["diff"]  # harbor.cfg holds passwords: never shown


def test_apply_installs_harbor_over_https_and_seeds_every_image(site):
    tb = site.tb
    run = site.apply()
    assert run.rc == 0, _fail(run)
    print(f"\nfirst apply (cluster on h1 + Harbor on h2): {run.seconds:.1f} s")

    # the generated admin password: 0600 in the state dir, never Harbor's default
    secret = harbor_install.secret_path(site.state, harbor_install.ADMIN_SECRET)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    password = site.password()
    assert password != "Harbor12345" and len(password) >= 16

    # harbor.cfg on the registry host: https with the site-CA certificate, the generated passwords, 0600
    cfg_path = tb.merged(REGISTRY) / harbor_install.CONFIG.lstrip("/")
    assert stat.S_IMODE(cfg_path.stat().st_mode) == 0o600
    cfg = dict(line.split(" = ", 1) for line in cfg_path.read_text().splitlines() if " = " in line
               and not line.startswith("#"))
    assert cfg["hostname"] == cluster.HARBOR_HOSTNAME and cfg["ui_url_protocol"] == "https"
    assert cfg["harbor_admin_password"] == password
    assert cfg["db_password"] not in ("root123", password)
    key = tb.merged(REGISTRY) / cfg["ssl_cert_key"].lstrip("/")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert os.access(tb.merged(REGISTRY) / "usr/local/bin/docker-compose", os.X_OK)
    assert tb.ssh(REGISTRY, "systemctl is-active docker harbor-standin").stdout.split() == ["active", "active"]
    assert site.install_runs() == 1

    session = default_session()
    # TLS verified against the site CA; the default password is refused, the generated one works
    api = HarborAPI(site.base, session, username="admin", password="Harbor12345", verify=site.ca)
    assert session.get(f"{site.base}/api/projects", auth=("admin", "Harbor12345"), verify=site.ca).status_code == 401
    api = HarborAPI(site.base, session, username="admin", password=password, verify=site.ca)
    assert api.project_exists("kubernetes")
    projects = session.get(f"{site.base}/api/projects", params={"name": "kubernetes"}, auth=("admin", password),
                           verify=site.ca).json()
    assert [p["metadata"]["public"] for p in projects if p["name"] == "kubernetes"] == ["true"]

    # every bundle image under its tag with the bundle's digest, readable anonymously (public project)
    images = site.images()
    assert images
    anon = RegistryClient(site.base, session, verify=site.ca)
    for img in images:
        assert anon.manifest_digest(img.repo, img.tag or img.digest) == img.digest, img.repo
    certs = site.work / "certs.d"
    certs.mkdir(exist_ok=True)
    (certs / "ca.crt").write_bytes(Path(site.ca).read_bytes())
    endpoint = f"{site.inv.registry.address}:{site.inv.registry.port}"
    for img in images:
        ref = f"docker://{endpoint}/{img.repo}:{img.tag}" if img.tag else f"docker://{endpoint}/{img.repo}@{img.digest}"
        p = subprocess.run(["skopeo", "inspect", "--raw", "--cert-dir", str(certs), ref], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        assert p.returncode == 0, p.stderr.decode()[-800:]
        assert "sha256:" + hashlib.sha256(p.stdout).hexdigest() == img.digest, ref

    # docker on the node trusts the registry by the site CA
    node_ca = tb.merged(CLUSTER) / f"etc/docker/certs.d/{cluster.HARBOR_HOSTNAME}/ca.crt"
    assert node_ca.read_bytes() == Path(site.ca).read_bytes()
    report = json.loads((site.state / "report.json").read_text())
    assert report["seed"]["totals"]["images"] == len(images)
    assert "registry" in report["changed"]


def test_second_apply_changes_nothing_on_the_registry_host(site):
    before = cluster.unit_invocation(site.tb, REGISTRY, UNIT)
    assert before
    run = site.apply()
    assert run.rc == 0, _fail(run)
    print(f"\nconverged re-apply: {run.seconds:.1f} s")
    assert "nothing to do" in run.stdout
    assert cluster.unit_invocation(site.tb, REGISTRY, UNIT) == before
    assert site.install_runs() == 1
    report = json.loads((site.state / "report.json").read_text())
    assert report["seed"] is None and report["changed"] == {}


def test_changed_harbor_cfg_is_restored_and_install_sh_runs_again(site):
    tb = site.tb
    tb.ssh(REGISTRY, f"sed -i 's/^max_job_workers = 3/max_job_workers = 9/' {harbor_install.CONFIG}")
    plan = cluster.installer("plan", *site.args(), "--json")
    assert plan.rc == 0, _fail(plan)
    steps = [(s["host"], s["kind"], s["target"]) for p in json.loads(plan.stdout)["phases"]
             for w in p["waves"] for s in w["steps"]]
    assert steps == [("registry", "put", harbor_install.CONFIG), ("registry", "harbor-install", "/opt/harbor")]
    before = cluster.unit_invocation(tb, REGISTRY, UNIT)
    run = site.apply()
    assert run.rc == 0, _fail(run)
    assert site.install_runs() == 2 and cluster.unit_invocation(tb, REGISTRY, UNIT) != before
    # Harbor keeps the admin password of its first start; ours never changed, so it still works
    r = default_session().get(f"{site.base}/api/projects", auth=("admin", site.password()), verify=site.ca)
    assert r.status_code == 200 and any(p["name"] == "kubernetes" for p in r.json())


def test_failing_install_sh_is_reported_with_its_log_and_a_rerun_recovers(site):
    tb = site.tb
    runs = site.install_runs()
    # Harbor down and prepare unusable: apply must re-run install.sh, which fails at ./prepare
    tb.ssh(REGISTRY, f"systemctl stop {UNIT} && chmod -x {harbor_install.INSTALL_DIR}/prepare")
    try:
        run = site.apply()
    finally:
        tb.ssh(REGISTRY, f"chmod +x {harbor_install.INSTALL_DIR}/prepare")
    assert run.rc != 0, _fail(run)
    err = run.stderr[run.stderr.rfind("error:"):]
    assert "registry: harbor-install /opt/harbor failed" in err and "install.sh failed" in err, err
    assert f"{harbor_install.INSTALL_LOG}: " in err and "prepare: Permission denied" in err, err
    print(f"\nfailed install.sh reported:\n{err[:700]}")
    run = site.apply()
    assert run.rc == 0, _fail(run)
    assert site.install_runs() == runs + 2
    assert tb.ssh(REGISTRY, f"systemctl is-active {UNIT}").stdout.strip() == "active"
