"""`installer upgrade`: the version policy (patch up only), the record of the last successful apply it compares
with, apply keeping a recorded version, the version changes in the evidence, and the command's exit codes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from contract.bundle import Entry, generate_keypair, load_private_key, write_bundle
from contract.errors import EXIT_INVALID, Error
from installer import apply as apply_mod
from installer import cli, plan_model, versions
from installer import inventory as inventory_mod
from installer.pki import Pki
from installer.runlock import LOCK_FILE
from installer.state import StateDir
from tests.typed_contents import components, trust

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "inventory.example.yaml"
RECORD = Path("/state/applied.json")


def k8s(version):
    return components({"binary/kubernetes-server": version, "binary/etcd": "3.3.1", "binary/flannel": "0.10.0"})


def refused(record, version):
    with pytest.raises(Error) as e:
        versions.decide(record, k8s(version), RECORD)
    assert e.value.exit_code == EXIT_INVALID and e.value.hint and "nothing was changed" in e.value.hint
    return e.value


# ------------------------------------------------------------------ the policy

def test_a_later_patch_release_is_an_upgrade():
    d = versions.decide({"kubernetes": "1.10.3"}, k8s("1.10.4"), RECORD)
    assert (d.current, d.target, d.same) == ("1.10.3", "1.10.4", False)
    assert d.to_dict() == {"from": "1.10.3", "to": "1.10.4", "nothing_to_do": False}
    assert not versions.decide({"kubernetes": "v1.10.3"}, k8s("1.10.12"), RECORD).same  # numeric, not text


def test_the_same_release_is_nothing_to_do():
    assert versions.decide({"kubernetes": "1.10.3"}, k8s("1.10.3"), RECORD).same
    assert versions.decide({"kubernetes": "v1.10.3"}, k8s("1.10.3"), RECORD).same


@pytest.mark.parametrize("target, jump", [("1.11.0", "minor"), ("1.9.9", "minor"), ("2.10.3", "major")])
def test_a_minor_or_major_jump_is_refused(target, jump):
    e = refused({"kubernetes": "1.10.3"}, target)
    assert e.message == (f"Kubernetes 1.10.3 -> {target} is a {jump} version change; upgrade moves only to a "
                         "later patch release of 1.10")
    assert "1.10.x (x > 3)" in e.hint


def test_a_downgrade_is_refused():
    e = refused({"kubernetes": "1.10.4"}, "1.10.3")
    assert e.message == "Kubernetes 1.10.3 is older than the 1.10.4 the cluster runs: upgrade does not downgrade"
    assert "Kubernetes 1.10.4 or a later 1.10 patch release" in e.hint


def test_no_record_is_refused_saying_how_to_get_one():
    e = refused(None, "1.10.4")
    assert e.message == f"no record of the Kubernetes version the cluster runs ({RECORD} does not exist)"
    assert "--state" in e.hint and "`installer apply` with the bundle it runs now" in e.hint


def test_a_bundle_without_kubernetes_or_with_a_bad_version_is_refused():
    with pytest.raises(Error) as e:
        versions.decide({"kubernetes": "1.10.3"}, components({"binary/etcd": "3.3.1"}), RECORD)
    assert "names no Kubernetes version" in e.value.message and e.value.exit_code == EXIT_INVALID
    e = refused({"kubernetes": "1.10.3"}, "latest")
    assert e.message.startswith("the bundle's version 'latest' is not a Kubernetes release version")


def test_apply_keeps_the_recorded_version():
    versions.guard_apply(None, k8s("1.11.0"), RECORD)  # nothing recorded yet: the first apply
    versions.guard_apply({"kubernetes": "1.10.3"}, k8s("1.10.3"), RECORD)
    with pytest.raises(Error) as e:
        versions.guard_apply({"kubernetes": "1.10.3"}, k8s("1.10.4"), RECORD)
    assert e.value.exit_code == EXIT_INVALID
    assert e.value.message == (f"the cluster runs Kubernetes 1.10.3 (recorded in {RECORD}) and the bundle has "
                               "1.10.4: apply does not change the Kubernetes version")
    assert "`installer upgrade`" in e.value.hint


# ------------------------------------------------------------------ per host versions, record, evidence

@pytest.fixture(scope="module")
def inv():
    return inventory_mod.load(INVENTORY)


def test_each_host_runs_the_components_of_its_roles(inv):
    got = versions.host_versions(inv, {"kubernetes": "1.10.4", "etcd": "3.3.1", "flannel": "0.10.0", "cni": "0.7.0",
                                       "docker": "18.09.1", "haproxy": "1.5.18"})
    for h in inv.hosts:
        comps = got[h.name]
        assert (comps.get("kubernetes") == "1.10.4") == (h.has("master") or h.has("node")), h.name
        assert ("etcd" in comps) == h.has("etcd") and ("cni" in comps) == h.has("node"), h.name
        assert ("docker" in comps) == h.has("node") and ("haproxy" in comps) == h.has("lb"), h.name
        assert "keepalived" not in comps  # a version the bundle does not name is not made up


def test_changes_list_only_what_moved_on_converged_hosts():
    before = {"hosts": {"m1": {"kubernetes": "1.10.3", "etcd": "3.3.1"}, "n1": {"kubernetes": "1.10.3"}}}
    now = {"m1": {"kubernetes": "1.10.4", "etcd": "3.3.1"}, "n1": {"kubernetes": "1.10.4"}, "n2": {"kubernetes": "1.10.4"}}
    assert versions.changes(before, now) == {"m1": {"kubernetes": {"from": "1.10.3", "to": "1.10.4"}},
                                             "n1": {"kubernetes": {"from": "1.10.3", "to": "1.10.4"}}}
    assert versions.changes(before, now, ["n2"]) == {}  # a new host gets its versions installed: no change
    assert versions.changes(None, now) == {}
    rec = versions.applied_record({"name": "k8s"}, {"kubernetes": "1.10.4"}, now, before, ["n2"])
    assert rec["hosts"] == {"m1": before["hosts"]["m1"], "n1": {"kubernetes": "1.10.3"}, "n2": now["n2"]}
    assert rec["kubernetes"] == "1.10.4" and rec["bundle"] == {"name": "k8s"}
    lines = versions.evidence_lines({"upgrade": {"from": "1.10.3", "to": "1.10.4"},
                                     "hosts": versions.changes(before, now)})
    assert lines == ["upgrade: Kubernetes 1.10.3 -> 1.10.4", "m1: kubernetes 1.10.3 -> 1.10.4",
                     "n1: kubernetes 1.10.3 -> 1.10.4"]
    assert versions.evidence_lines(None) == [] and versions.evidence_lines({"upgrade": None, "hosts": {}}) == []


def fake_site(inv, root, version):
    bundle = SimpleNamespace(name="k8s", version=version, digest="d" * 64, fingerprint="f", reused=True, dir=root,
                             components=k8s(version), trust=trust(k8s(version)))
    return SimpleNamespace(inv=inv, pki=Pki(root), state=StateDir(root).ensure(), bundle=bundle, pki_report=None)


@pytest.fixture
def converge(monkeypatch, inv, tmp_path):
    """apply_command with a stand-in site of a given Kubernetes version and a plan that changes nothing."""
    def run(version, upgrade=None):
        monkeypatch.setattr(apply_mod, "load_site", lambda *a, **k: fake_site(inv, tmp_path, version))
        monkeypatch.setattr(apply_mod, "make_plan", lambda *a, **k: plan_model.Plan((), ()))
        opts = apply_mod.Options(connector_for=lambda i, h: None, session=None, checks=False, out=lambda line: None)
        return apply_mod.apply_command(tmp_path / "inv", tmp_path / "b", tmp_path / "pub", tmp_path, opts,
                                       upgrade=upgrade)
    return run


def test_apply_records_the_versions_and_upgrade_reports_the_changes(converge, inv, tmp_path):
    report = converge("1.10.3")
    rec = StateDir(tmp_path).applied()
    assert rec["kubernetes"] == "1.10.3" and rec["bundle"]["manifest_sha256"] == "d" * 64
    assert rec["hosts"] == versions.host_versions(inv, versions.component_versions(k8s("1.10.3")))
    assert report["versions"] == {"upgrade": None, "hosts": {}}
    with pytest.raises(Error) as e:  # apply with a newer bundle: refused, the record stays
        converge("1.10.4")
    assert "apply does not change the Kubernetes version" in e.value.message
    assert StateDir(tmp_path).applied() == rec
    report = converge("1.10.4", upgrade=versions.Decision("1.10.3", "1.10.4"))
    masters = [h.name for h in inv.masters]
    assert report["versions"]["hosts"][masters[0]]["kubernetes"] == {"from": "1.10.3", "to": "1.10.4"}
    assert set(report["versions"]["hosts"]) == {h.name for h in inv.hosts if h.has("master") or h.has("node")}
    text = (tmp_path / "report.txt").read_text()
    assert "upgrade: Kubernetes 1.10.3 -> 1.10.4" in text and f"{masters[0]}: kubernetes 1.10.3 -> 1.10.4" in text
    assert json.loads((tmp_path / "report.json").read_text())["versions"] == report["versions"]
    assert StateDir(tmp_path).applied()["kubernetes"] == "1.10.4"


def test_a_failed_upgrade_says_what_it_left_and_a_failed_apply_does_not(converge, monkeypatch, inv, tmp_path):
    """The executor stops on the first node: upgrade's error adds the hosts done / stopped on / untouched and
    that the same command resumes; the record stays at the version the cluster was at (the re-run upgrades)."""
    converge("1.10.3")
    masters, nodes = [h.name for h in inv.masters], [h.name for h in inv.nodes]
    steps = [plan_model.Step(n, plan_model.StepKind.RESTART, "kubelet" if n in nodes else "kube-apiserver", "new")
             for n in masters + nodes]
    plan = plan_model.Plan((), (plan_model.Phase("nodes", tuple(plan_model.Wave((s,)) for s in steps), rolling=True),))

    class StopsOnTheFirstNode:
        def __init__(self, site, hosts, opts):
            self.outcome = None

        def run(self, plan):
            self.outcome = apply_mod.Outcome(plan, executed=[s.to_dict() for s in steps[:len(masters)]],
                                             failed=[steps[len(masters)].to_dict()])
            raise apply_mod.StepFailed(f"{nodes[0]}: restart kubelet failed", hint="read the unit's log")

    monkeypatch.setattr(apply_mod, "make_plan", lambda *a, **k: plan)
    monkeypatch.setattr(apply_mod, "Executor", StopsOnTheFirstNode)
    monkeypatch.setattr(apply_mod.etcd_backup, "before_changes", lambda *a, **k: None)
    opts = apply_mod.Options(connector_for=lambda i, h: None, session=None, checks=False, out=lambda line: None)

    def run(up):
        return apply_mod.apply_command(tmp_path / "inv", tmp_path / "b", tmp_path / "pub", tmp_path, opts, upgrade=up)

    monkeypatch.setattr(apply_mod, "load_site", lambda *a, **k: fake_site(inv, tmp_path, "1.10.4"))
    with pytest.raises(apply_mod.StepFailed) as e:
        run(versions.Decision("1.10.3", "1.10.4"))
    assert e.value.message == f"{nodes[0]}: restart kubelet failed"
    assert e.value.details == [f"the upgrade to 1.10.4 stopped on {nodes[0]}: done on {', '.join(masters)}; "
                               f"not touched: {', '.join(nodes[1:])}"]
    assert e.value.hint.startswith("read the unit's log; then run `installer upgrade` with the same bundle again")
    assert StateDir(tmp_path).applied()["kubernetes"] == "1.10.3"
    monkeypatch.setattr(apply_mod, "load_site", lambda *a, **k: fake_site(inv, tmp_path, "1.10.3"))
    with pytest.raises(apply_mod.StepFailed) as e:
        run(None)
    assert e.value.details == [] and e.value.hint == "read the unit's log"


# ------------------------------------------------------------------ the command

@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Small signed bundles with Kubernetes 1.10.2 ... 1.11.0 in their manifests, and the public key."""
    d = tmp_path_factory.mktemp("upgrade-bundles")
    generate_keypair(d / "keys")
    src = d / "f"
    src.write_bytes(b"kubelet")
    entries = [Entry("binaries/kubelet", src, 7, hashlib.sha256(b"kubelet").hexdigest(), 0o644)]
    key = load_private_key(d / "keys" / "bundle.key")
    out = {v: write_bundle(d / v, "k8s", v, entries, key, spec_sha256="0" * 64, lock_sha256="1" * 64,
                           components=k8s(v), trust=trust(k8s(v)), level=1).path
           for v in ("1.10.2", "1.10.3", "1.10.4", "1.11.0")}
    return out, d / "keys" / "bundle.pub"


def upgrade(bundles, version, state, *extra):
    paths, pub = bundles
    return CliRunner().invoke(cli.app, ["upgrade", "-b", str(paths[version]), "--pub", str(pub), "-i", str(INVENTORY),
                                        "--state", str(state), *extra])


def recorded(state, version):
    StateDir(state).ensure().set_applied({"bundle": {}, "kubernetes": version, "versions": {}, "hosts": {}})


@pytest.mark.parametrize("version, message, hint", [
    ("1.11.0", "error: Kubernetes 1.10.3 -> 1.11.0 is a minor version change", "1.10.x (x > 3)"),
    ("1.10.2", "error: Kubernetes 1.10.2 is older than the 1.10.3 the cluster runs", "or a later 1.10 patch"),
])
def test_cli_refuses_a_jump_and_a_downgrade_with_exit_2(bundles, tmp_path, version, message, hint):
    recorded(tmp_path, "1.10.3")
    r = upgrade(bundles, version, tmp_path)
    assert r.exit_code == 2 and message in r.output and "hint: " in r.output and hint in r.output
    assert "Traceback" not in r.output and not (tmp_path / "report.json").exists()
    r = upgrade(bundles, version, tmp_path, "--json")
    assert r.exit_code == 2 and json.loads(r.stderr)["exit_code"] == 2  # the error as JSON on stderr


def test_cli_without_a_record_exits_2(bundles, tmp_path):
    r = upgrade(bundles, "1.10.4", tmp_path / "fresh")
    assert r.exit_code == 2 and "no record of the Kubernetes version the cluster runs" in r.output
    assert "hint: pass the --state directory" in r.output


def test_cli_same_release_is_already_at_and_does_nothing(bundles, tmp_path, monkeypatch):
    monkeypatch.setattr(apply_mod, "apply_command", lambda *a, **k: pytest.fail("converged on the same release"))
    recorded(tmp_path, "1.10.3")
    before = sorted(p.name for p in tmp_path.iterdir())
    r = upgrade(bundles, "1.10.3", tmp_path)
    assert r.exit_code == 0 and "already at v1.10.3: nothing to do" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != LOCK_FILE) == before  # no unpack, no report
    r = upgrade(bundles, "1.10.3", tmp_path, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["already_at"] == "1.10.3"


def test_cli_patch_up_converges_as_apply_with_the_decision(bundles, tmp_path, monkeypatch):
    got = {}

    def apply_command(inventory, bundle, pub, root, opts, focus=None, upgrade=None):
        got.update(bundle=bundle, root=root, upgrade=upgrade, focus=focus)
        return {"bundle": {}, "versions": {"upgrade": upgrade.to_dict(), "hosts": {}}}

    monkeypatch.setattr(apply_mod, "apply_command", apply_command)
    monkeypatch.setattr(apply_mod, "evidence_text", lambda d: "evidence")
    recorded(tmp_path, "1.10.3")
    r = upgrade(bundles, "1.10.4", tmp_path)
    assert r.exit_code == 0, r.output
    assert got["upgrade"] == versions.Decision("1.10.3", "1.10.4") and got["focus"] is None
    assert got["bundle"] == bundles[0]["1.10.4"] and got["root"] == tmp_path
    assert "upgrade: Kubernetes 1.10.3 -> 1.10.4" in r.output and "evidence" in r.stdout
