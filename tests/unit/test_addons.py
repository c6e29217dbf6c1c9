"""Addon manifests render for the site (DNS choice, every image from the seeded registry, valid YAML) and stay
pending in the state dir until `kubectl apply` on the first master succeeded."""

from pathlib import Path

import pytest
import yaml

from contract.errors import Error
from installer import addons, inventory, plan_model, plan_rules
from installer import apply as apply_mod
from installer.hosts.connector import Result
from installer.render import File
from installer.state import StateDir

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {r: f"harbor.example.com/kubernetes/{r}:x" for r in
          ("kube-dns", "dnsmasq", "dns-sidecar", "coredns", "dashboard", "heapster", "metrics-server", "pause")}


def images_of(text):
    for doc in yaml.safe_load_all(text):
        spec = ((doc or {}).get("spec") or {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            yield c["image"]


def test_kube_dns_site():
    inv = inventory.load(ROOT / "inventory.example.yaml")
    out = addons.render(ROOT / "manifests", inv, IMAGES)
    assert set(out) == {"kube-dns.yaml", "dashboard.yaml", "metrics-server.yaml"}
    imgs = [i for t in out.values() for i in images_of(t)]
    assert len(imgs) == 6 and all(i.startswith("harbor.example.com/kubernetes/") for i in imgs)
    assert "clusterIP: 10.254.0.10" in out["kube-dns.yaml"]
    assert "--domain=cluster.local." in out["kube-dns.yaml"]


def test_coredns_site_and_missing_image():
    inv = inventory.load(ROOT / "inventory.example.yaml")
    inv = inv.model_copy(update={"cluster": inv.cluster.model_copy(update={"dns_addon": "coredns"})})
    out = addons.render(ROOT / "manifests", inv, IMAGES)
    assert "coredns.yaml" in out and "kube-dns.yaml" not in out
    missing = {k: v for k, v in IMAGES.items() if k != "coredns"}
    with pytest.raises(Error, match="coredns.yaml.j2 needs a value"):
        addons.render(ROOT / "manifests", inv, missing)


# ------------------------------------------------------------------ executing: pending until kubectl apply succeeds

KUBE_DNS = f"{plan_rules.ADDONS_DIR}/kube-dns.yaml"


class FakeMaster:
    """A first master: records puts and commands; `kubectl apply` answers with the result given."""

    def __init__(self, name, apply_result, fail_put=False):
        self.name = name
        self.apply_result = apply_result
        self.fail_put = fail_put
        self.puts, self.commands = [], []

    def run(self, cmd, *, sudo=None, timeout=None, check=True, input=None):
        self.commands.append(cmd)
        if isinstance(self.apply_result, Exception):
            raise self.apply_result
        return self.apply_result

    def put(self, path, content, mode, owner="root", group="root"):
        if self.fail_put:
            raise Error(f"{self.name}: connection lost", hint="check ssh")
        self.puts.append(path)

    def close(self):
        pass


def run_addons(tmp_path, conn, puts=True):
    inv = inventory.load(ROOT / "inventory.example.yaml")
    first = inv.masters[0].name
    state = StateDir(tmp_path / "state").ensure()
    site = apply_mod.Site(inv, state, None, None, {}, {}, {}, "last-component")
    opts = apply_mod.Options(connector_for=lambda inv, host: conn, session=None)
    steps = ([plan_model.Step(first, "put", KUBE_DNS, "new file", file=File(b"kind: List\nitems: []\n"))] if puts else []) \
        + [plan_model.Step(first, "kubectl-apply", plan_rules.ADDONS_DIR, "manifests changed", command=plan_rules.KUBECTL_APPLY)]
    plan = plan_model.Plan((), (plan_model.Phase("addons", (plan_model.Wave(tuple(steps)),)),))
    ex = apply_mod.Executor(site, apply_mod.Hosts(inv, opts), opts)
    return first, state, lambda: ex.run(plan)


def test_failed_kubectl_apply_is_an_error_and_keeps_the_manifests_pending(tmp_path):
    out = Result(1, "service/kube-dns created\n", 'error: unable to recognize "/etc/kubernetes/addons/kube-dns.yaml":'
                 ' no matches for kind "Deployment" in version "extensions/v1beta1"\n')
    conn = FakeMaster("m", out)
    first, state, run = run_addons(tmp_path, conn)
    with pytest.raises(Error) as e:
        run()
    assert conn.puts == [KUBE_DNS] and conn.commands == [plan_rules.KUBECTL_APPLY]
    assert e.value.message.startswith(f"{first}: kubectl-apply {plan_rules.ADDONS_DIR} failed in phase addons: {first}: "
                                      f"`{plan_rules.KUBECTL_APPLY}` failed (exit status 1)")
    assert "kubectl: service/kube-dns created" in e.value.details
    assert any('no matches for kind "Deployment"' in d for d in e.value.details)
    assert "rejected a manifest" in e.value.hint and "stay pending" in e.value.hint
    assert state.pending.load() == {first: {plan_rules.ADDONS_UNIT}}
    assert state.journal.last_run()[-2]["status"] == "failed"


def test_unreachable_apiserver_gets_its_own_hint(tmp_path):
    conn = FakeMaster("m", Result(1, "", "Unable to connect to the server: dial tcp 198.18.0.100:8443: "
                                         "connect: connection refused\n"))
    first, state, run = run_addons(tmp_path, conn)
    with pytest.raises(Error) as e:
        run()
    assert "cannot reach the apiserver" in e.value.hint and first in e.value.hint
    assert state.pending.load() == {first: {plan_rules.ADDONS_UNIT}}


def test_interrupted_between_write_and_apply_stays_pending(tmp_path):
    conn = FakeMaster("m", Error("m: ssh: connection closed", hint="check ssh"))
    first, state, run = run_addons(tmp_path, conn)
    with pytest.raises(Error):
        run()
    assert conn.puts == [KUBE_DNS] and state.pending.load() == {first: {plan_rules.ADDONS_UNIT}}


def test_pending_is_recorded_before_the_write(tmp_path):
    conn = FakeMaster("m", Result(0, "", ""), fail_put=True)
    first, state, run = run_addons(tmp_path, conn)
    with pytest.raises(Error):
        run()
    assert conn.commands == [] and state.pending.load() == {first: {plan_rules.ADDONS_UNIT}}


def test_successful_apply_clears_pending_and_reports_objects(tmp_path):
    conn = FakeMaster("m", Result(0, "service/kube-dns created\ndeployment.extensions/kube-dns created\n", ""))
    first, state, run = run_addons(tmp_path, conn, puts=False)
    state.pending.add(first, [plan_rules.ADDONS_UNIT, "kubelet"])
    outcome = run()
    assert state.pending.load() == {first: {"kubelet"}}
    (done,) = [e for e in outcome.executed if e["kind"] == "kubectl-apply"]
    assert done["status"] == "done" and done["detail"] == "2 object(s) applied" and not outcome.skipped
