"""Cluster checks as data cases: canned HTTPS answers in, results out (a fake requests session)."""

from __future__ import annotations

import json

import pytest
import requests
import yaml

from contract.errors import Error
from installer import checks as C
from installer import inventory as inventory_mod
from installer.pki import Pki

INV = {
    "cluster": {"name": "t", "vip": "198.18.0.100"},
    "registry": {"mode": "external", "hostname": "reg.test", "address": "198.18.0.1", "port": 5000,
                 "insecure": True},
    "hosts": [{"name": f"h{i}", "address": f"198.18.0.1{i}", "roles": ["master", "etcd", "lb"]} for i in (1, 2, 3)]
    + [{"name": "h4", "address": "198.18.0.14", "roles": ["node"]}],
}
API = "https://198.18.0.100:8443"


class Resp:
    def __init__(self, status: int, body) -> None:
        self.status_code = status
        self.text = body if isinstance(body, str) else json.dumps(body)

    def json(self):
        return json.loads(self.text)


class FakeSession:
    """URL -> Resp or exception; records PUTs."""

    def __init__(self, answers: dict) -> None:
        self.answers = answers
        self.puts = []

    def get(self, url, **kw):
        assert kw["cert"][0].endswith(".crt") and kw["verify"].endswith("ca.crt")
        a = self.answers.get(url, requests.ConnectionError("Connection refused"))
        if isinstance(a, Exception):
            raise a
        return a

    def put(self, url, data=None, **kw):
        self.puts.append((url, data))
        return self.answers.get(("PUT", url), Resp(201, {}))


@pytest.fixture(scope="module")
def inv(tmp_path_factory):
    p = tmp_path_factory.mktemp("inv") / "inventory.yaml"
    p.write_text(yaml.safe_dump(INV))
    return inventory_mod.load(p)


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path)


def healthy_answers() -> dict:
    lease = json.dumps({"holderIdentity": "h2_abc", "renewTime": "2018-05-21T00:00:00Z"})
    ep = {"metadata": {"annotations": {C.LEADER_ANNOTATION: lease}}}
    a = {f"https://198.18.0.1{i}:2379/health": Resp(200, {"health": "true"}) for i in (1, 2, 3)}
    a.update({
        f"{API}/healthz": Resp(200, "ok"),
        f"{API}/api/v1/componentstatuses": Resp(200, {"items": [
            {"metadata": {"name": n}, "conditions": [{"type": "Healthy", "status": "True"}]}
            for n in ("scheduler", "controller-manager", "etcd-0")]}),
        f"{API}/api/v1/namespaces/kube-system/endpoints/kube-controller-manager": Resp(200, ep),
        f"{API}/api/v1/namespaces/kube-system/endpoints/kube-scheduler": Resp(200, ep),
        f"{API}/api/v1/nodes": Resp(200, {"items": [
            {"metadata": {"name": "h4"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}]}),
    })
    return a


def test_all_healthy(inv, pki):
    rep = C.run_all(inv, pki, FakeSession(healthy_answers()))
    assert rep.ok, rep.text()
    assert [r.name for r in rep.results].count("etcd health") == 3
    assert "h2_abc" in next(r.detail for r in rep.results if r.name == "leader kube-scheduler")
    assert rep.text().endswith("cluster healthy")


def test_unhealthy_member_node_and_leaderless(inv, pki):
    a = healthy_answers()
    del a["https://198.18.0.12:2379/health"]  # refused
    a[f"{API}/api/v1/nodes"] = Resp(200, {"items": [
        {"metadata": {"name": "h4"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}]})
    a[f"{API}/api/v1/namespaces/kube-system/endpoints/kube-scheduler"] = Resp(404, "not found")
    rep = C.run_all(inv, pki, FakeSession(a))
    bad = {(r.name, r.target): r.detail for r in rep.results if not r.ok}
    assert bad[("etcd health", "h2")] == "connection refused"
    assert "h4 (NotReady)" in bad[("nodes Ready", "198.18.0.100:8443")]
    assert "HTTP 404" in bad[("leader kube-scheduler", "198.18.0.100:8443")]
    assert not rep.ok and "3 check(s) failed" in rep.text()


def test_vip_down_fails_every_api_check(inv, pki):
    a = {k: v for k, v in healthy_answers().items() if not k.startswith(API)}
    rep = C.run_all(inv, pki, FakeSession(a))
    assert [r.name for r in rep.results if not r.ok] == [
        "healthz via VIP", "componentstatuses", "leader kube-controller-manager", "leader kube-scheduler",
        "nodes Ready"]


def test_flannel_key_read_and_write(inv, pki):
    url = "https://198.18.0.11:2379/v2/keys/coreos.com/network/config"
    s = FakeSession({url: Resp(200, {"node": {"value": '{"Network": "x"}'}})})
    assert C.flannel_config(inv, pki, s) == '{"Network": "x"}'
    assert C.flannel_config(inv, pki, FakeSession({url: Resp(404, {})})) is None
    C.put_flannel_config(inv, pki, s, "{}")
    assert s.puts == [(url, {"value": "{}"})]
    bad = FakeSession({("PUT", u.replace("11", n)): Resp(404, "v2 disabled") for u in [url] for n in ("11", "12", "13")})
    with pytest.raises(Error) as e:
        C.put_flannel_config(inv, pki, bad, "{}")
    assert "enable-v2" in e.value.hint and len(e.value.details) == 3


@pytest.mark.parametrize("failure,expected", [
    ("plain", (False, "skipped: not Harbor (no /api/systeminfo): a plain registry has no projects")),
    ("other", None),
])
def test_ensure_project_branches_on_the_error_type(inv, monkeypatch, failure, expected):
    """A plain registry (NoHarborAPI) is skipped; any other failure, even one that names Harbor, is raised."""
    from installer.registry import harbor

    def api(self):
        if failure == "plain":
            raise harbor.NoHarborAPI("a registry without projects")
        raise Error("no Harbor API here, but for another reason")

    monkeypatch.setattr(harbor.HarborAPI, "api", api)
    if expected is None:
        with pytest.raises(Error, match="another reason"):
            C.ensure_project(inv, requests.Session(), password="pw", verify=True)
    else:
        assert C.ensure_project(inv, requests.Session(), password="pw", verify=True) == expected
