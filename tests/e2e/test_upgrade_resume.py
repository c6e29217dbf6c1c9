"""`installer upgrade` 1.10.3 -> 1.10.4 that fails on a host in the middle of the roll, then a re-run that resumes.

3 masters (etcd + lb) + 2 nodes, set up and applied as test_apply's module does. The roll is h1, h2, h3 (masters,
one at a time), then h4, h5 (nodes, one at a time). The fault is one a hardened site hits: h4's kubelet executable
is immutable (chattr +i), so not even root can replace it. The roll stops at h4 with h1..h3 upgraded and h5
untouched; once the attribute is cleared, the same command resumes without touching h1..h3 again.
"""

from __future__ import annotations

import json

import pytest

from installer import checks as checks_mod
from installer.apply import default_session
from installer.drain import MARK
from tests.e2e import cluster
from tests.e2e.test_apply import MASTERS, _fail, _kubectl, open_site

pytestmark = pytest.mark.e2e
NODES = (4, 5)
FAILED = 4  # the first node: the three masters come before it in the roll, h5 after it
BIN = "/usr/local/bin"
FAULT = f"{BIN}/kubelet"
EXECUTABLES = {"master": ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
               "node": ("kubelet", "kube-proxy", "kubectl")}
UNITS = {"master": ("etcd", "flanneld", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "haproxy",
                    "keepalived"),
         "node": ("flanneld", "docker", "kubelet", "kube-proxy")}


@pytest.fixture(scope="module")
def site(testbed_factory, tmp_path_factory):
    with open_site(testbed_factory, tmp_path_factory, n_hosts=5, name="upgrade-resume") as s:
        run = s.apply()
        assert run.rc == 0, _fail(run)
        yield s


def _role(n: int) -> str:
    return "master" if n in MASTERS else "node"


def _host(site, n: int) -> dict:
    """What host n runs: the sha256 of its Kubernetes executables, its units' InvocationIDs (a new one at every
    start), the version its first executable prints."""
    exe = EXECUTABLES[_role(n)]
    out = site.tb.ssh(n, "cd " + BIN + " && sha256sum " + " ".join(exe)).stdout.split()
    return {"sha256": dict(zip(out[1::2], out[0::2])),
            "started": {u: cluster.unit_invocation(site.tb, n, u) for u in UNITS[_role(n)]},
            "version": site.tb.ssh(n, f"{BIN}/{exe[0]} --version").stdout.strip()}


def _reported(site) -> dict:
    """What the running stand-ins report: each master's apiserver GET /version, each node's kubeletVersion."""
    inv, pki, session = site.inventory(), site.pki(), default_session()
    out = {}
    for h in inv.masters:
        r = session.get(f"https://{h.address}:{inv.cluster.apiserver_port}/version", **checks_mod.client_tls(pki, "admin"))
        out[h.name] = r.json()["gitVersion"]
    for node in _nodes(site):
        out[node["metadata"]["name"]] = node["status"]["nodeInfo"]["kubeletVersion"]
    return out


def _nodes(site) -> list:
    return json.loads(_kubectl(site, "get nodes -o json").stdout)["items"]


def _cordoned(site) -> dict:
    return {n["metadata"]["name"]: (bool(n["spec"].get("unschedulable")),
                                    MARK in (n["metadata"].get("annotations") or {})) for n in _nodes(site)}


def _steps(site, start: int) -> list:
    return [e for e in site.journal()[start:] if e.get("event") == "step"]


def test_a_failed_host_stops_the_roll_and_a_rerun_resumes(site, tmp_path_factory):
    tb = site.tb
    newer = cluster.build_bundle(tmp_path_factory.mktemp("bundle-1.10.4"), release="v1.10.4")
    args = site.args(bundle=newer)
    before = {n: _host(site, n) for n in (*MASTERS, *NODES)}
    assert all("v1.10.3" in v["version"] for v in before.values()), before
    assert set(_reported(site).values()) == {"v1.10.3"}

    start = len(site.journal())
    tb.ssh(FAILED, f"chattr +i {FAULT}")
    try:
        run = cluster.installer("upgrade", *args, timeout=900)
        after_fail = {n: _host(site, n) for n in (*MASTERS, *NODES)}
        reported = _reported(site)
        cordoned = _cordoned(site)
        vip_ok = checks_mod.apiserver_healthz(site.inventory(), site.pki(), default_session(), tb.vip,
                                              site.inventory().cluster.lb_port)
    finally:
        tb.ssh(FAILED, f"chattr -i {FAULT}")

    # exit non-zero, naming the host and what failed, with the host's own words for why
    assert run.rc == 1 and "Traceback" not in run.stderr, _fail(run)
    err = run.stderr[run.stderr.rfind("error:"):]
    assert err.splitlines()[0].startswith(f"error: h{FAILED}: binary {FAULT} failed in phase nodes"), err
    assert "Operation not permitted" in err and "hint:" in err, err
    # and what the run left, and that the same command resumes
    assert f"the upgrade to 1.10.4 stopped on h{FAILED} (left cordoned: h{FAILED}): done on h1, h2, h3; " \
           "not touched: h5" in err, err
    assert "then run `installer upgrade` with the same bundle again: it resumes" in err, err
    print(f"\nthe upgrade stopped at h{FAILED} after {run.seconds:.1f} s:\n{err[:1500]}")
    # every host before it in the roll runs 1.10.4: new executables, restarted units, the stand-ins say so
    for n in MASTERS:
        assert "v1.10.4" in after_fail[n]["version"], after_fail[n]
        assert all(after_fail[n]["sha256"][x] != before[n]["sha256"][x] for x in EXECUTABLES["master"]), n
        for u in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            assert after_fail[n]["started"][u] != before[n]["started"][u], (n, u)
        assert reported[f"h{n}"] == "v1.10.4", reported
    # etcd did not change in the bundle: no member was restarted
    assert all(after_fail[n]["started"]["etcd"] == before[n]["started"]["etcd"] for n in MASTERS)
    # the failed host: cordoned for its upgrade (marked), its kubelet neither replaced nor restarted
    assert cordoned[f"h{FAILED}"] == (True, True), cordoned
    assert after_fail[FAILED]["sha256"]["kubelet"] == before[FAILED]["sha256"]["kubelet"]
    assert after_fail[FAILED]["started"] == before[FAILED]["started"]
    assert reported[f"h{FAILED}"] == "v1.10.3", reported
    # every host after it is untouched: 1.10.3, schedulable, nothing restarted, no step of this run
    for n in NODES[NODES.index(FAILED) + 1:]:
        assert after_fail[n] == before[n], (n, before[n], after_fail[n])
        assert reported[f"h{n}"] == "v1.10.3" and cordoned[f"h{n}"] == (False, False), (reported, cordoned)
        assert not [e for e in _steps(site, start) if f"h{n}" in (e["host"], e["target"])], _steps(site, start)
    # the cluster still serves through the VIP, and the record still says 1.10.3: the next upgrade resumes
    assert vip_ok[0], vip_ok
    assert json.loads((site.state / "applied.json").read_text())["kubernetes"].lstrip("v") == "1.10.3"

    # the fault removed, the same command again: it resumes where the first run stopped
    resumed_at = len(site.journal())
    again = cluster.installer("upgrade", *args, timeout=900)
    assert again.rc == 0, _fail(again)
    assert "upgrade: Kubernetes 1.10.3 -> 1.10.4" in again.stderr
    done = {n: _host(site, n) for n in (*MASTERS, *NODES)}
    steps = _steps(site, resumed_at)
    for n in MASTERS:  # upgraded before: not touched again (no step, no restart, the same executables)
        assert done[n] == after_fail[n], (n, after_fail[n], done[n])
        assert not [e for e in steps if e["host"] == f"h{n}"], steps
    # on the failed host only what the first run did not do: its kubelet (kube-proxy and kubectl were written)
    assert [e["target"] for e in steps if e["host"] == f"h{FAILED}" and e["kind"] == "binary"] == [FAULT], steps
    for n in NODES:
        assert "v1.10.4" in done[n]["version"] and done[n]["sha256"] != before[n]["sha256"], done[n]
        assert done[n]["started"]["kubelet"] != before[n]["started"]["kubelet"], n
    assert set(_reported(site).values()) == {"v1.10.4"}, _reported(site)
    assert set(_cordoned(site).values()) == {(False, False)}, _cordoned(site)  # no node left cordoned
    report = json.loads((site.state / "report.json").read_text())
    changed = report["versions"]["hosts"]
    assert sorted(changed) == ["h1", "h2", "h3", "h4", "h5"], report["versions"]
    assert all({k: v.lstrip("v") for k, v in c["kubernetes"].items()} == {"from": "1.10.3", "to": "1.10.4"}
               for c in changed.values()), changed
    text = (site.state / "report.txt").read_text()
    assert "upgrade: Kubernetes 1.10.3 -> 1.10.4" in text and "h1: kubernetes 1.10.3 -> 1.10.4" in text
    assert json.loads((site.state / "applied.json").read_text())["kubernetes"].lstrip("v") == "1.10.4"
    print(f"resumed and finished in {again.seconds:.1f} s")
