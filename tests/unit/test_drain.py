"""Cordon, drain and uncordon through the API (installer/drain.py), against a recorded fake session."""

from __future__ import annotations

import json

import pytest

from contract.errors import Error
from installer import drain
from installer.inventory import Inventory

INV = {"cluster": {"name": "t", "vip": "198.18.0.100"}, "registry": {"hostname": "r.t", "address": "198.18.0.20"},
       "hosts": [{"name": "m1", "address": "198.18.0.11", "roles": ["master", "etcd", "lb"]},
                 {"name": "n1", "address": "198.18.0.21", "roles": ["node"]}]}


class Resp:
    def __init__(self, status, doc=None):
        self.status_code, self._doc = status, doc
        self.headers = {"Content-Type": "application/json"}
        self.text = json.dumps(doc) if doc is not None else ""

    def json(self):
        return self._doc


def pod(name, owner=None, mirror=False, node="n1"):
    meta = {"name": name, "namespace": "kube-system"}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "x", "controller": True}]
    if mirror:
        meta["annotations"] = {drain.MIRROR: "abc"}
    return {"metadata": meta, "spec": {"nodeName": node}}


class Session:
    """The apiserver as drain sees it: pods go away when evicted; `stubborn` answers 429 twice."""

    def __init__(self, pods, stubborn=(), never=()):
        self.pods, self.calls, self.stubborn, self.never = list(pods), [], {s: 2 for s in stubborn}, set(never)
        self.node = {"metadata": {"name": "n1"}, "spec": {}}

    def request(self, method, url, **kw):
        self.calls.append((method, url.split(":8443")[-1], kw.get("json")))
        if method == "PATCH":
            patch = kw["json"]
            ann = self.node["metadata"].setdefault("annotations", {})
            for k, v in patch["metadata"]["annotations"].items():
                ann.pop(k, None) if v is None else ann.__setitem__(k, v)
            self.node["spec"]["unschedulable"] = patch["spec"]["unschedulable"]
            return Resp(200, self.node)
        if method == "GET":
            assert kw["params"] == {"fieldSelector": "spec.nodeName=n1"}
            return Resp(200, {"items": list(self.pods)})
        name = url.rsplit("/", 2)[-2]
        if self.stubborn.get(name):
            self.stubborn[name] -= 1
            return Resp(429, {"message": "Cannot evict pod as it would violate the pod's disruption budget."})
        if name not in self.never:
            self.pods = [p for p in self.pods if p["metadata"]["name"] != name]
        return Resp(201, {"status": "Success"})


@pytest.fixture
def inv():
    return Inventory.model_validate(INV)


class Pki:
    def crt_path(self, n):
        return f"/pki/{n}.crt"

    def key_path(self, n):
        return f"/pki/{n}.key"

    def etcd_ca_name(self):
        return "etcd-ca"


def test_drain_cordons_marks_and_evicts_all_but_daemonset_and_mirror_pods(inv):
    s = Session([pod("dns", "ReplicaSet"), pod("fluentd", "DaemonSet"), pod("static", mirror=True), pod("bare")])
    out = drain.drain(inv, Pki(), s, "n1", sleep=lambda _: None)
    assert s.node["spec"]["unschedulable"] is True and s.node["metadata"]["annotations"] == {drain.MARK: "true"}
    evicted = sorted(u.split("/")[-2] for m, u, _ in s.calls if m == "POST")
    assert evicted == ["bare", "dns"]
    assert [p["metadata"]["name"] for p in s.pods] == ["fluentd", "static"]
    assert "2 pod(s) evicted, 2 kept" in out and "not coming back: kube-system/bare" in out
    body = next(b for m, _, b in s.calls if m == "POST")
    assert body["kind"] == "Eviction" and body["apiVersion"] == "policy/v1beta1"
    assert drain.uncordon(inv, Pki(), s, "n1") == "schedulable again"
    assert s.node["spec"]["unschedulable"] is False and s.node["metadata"]["annotations"] == {}


def test_a_disruption_budget_is_waited_for_then_a_pod_that_stays_fails_the_step(inv):
    s = Session([pod("dns", "ReplicaSet")], stubborn=("dns",))
    drain.drain(inv, Pki(), s, "n1", sleep=lambda _: None)
    assert [m for m, _, _ in s.calls].count("POST") == 3  # 429, 429, evicted
    t = [0.0]
    s = Session([pod("dns", "ReplicaSet")], never=("dns",))
    with pytest.raises(Error) as e:
        drain.drain(inv, Pki(), s, "n1", timeout=5, sleep=lambda d: t.__setitem__(0, t[0] + d),
                    clock=lambda: t[0])
    assert "still there" in e.value.message and "kube-system/dns" in e.value.details[0]
    assert "uncordons the node" in e.value.hint


def test_a_bare_400_from_a_just_restarted_apiserver_is_tried_again_a_status_400_is_not(inv, monkeypatch):
    monkeypatch.setattr(drain.time, "sleep", lambda _: None)

    class Odd(Session):
        def __init__(self, first):
            super().__init__([])
            self.first = first

        def request(self, method, url, **kw):
            if method == "GET" and self.first:
                r = self.first.pop(0)
                return r
            return super().request(method, url, **kw)

    html = Resp(400)
    html.headers, html.text = {"Content-Type": "text/html"}, "<!DOCTYPE HTML><p>Error code: 400</p>"
    s = Odd([html])
    assert "0 pod(s) evicted" in drain.drain(inv, Pki(), s, "n1", sleep=lambda _: None)
    status = Resp(400, {"kind": "Status", "message": "bad selector"})
    with pytest.raises(Error) as e:
        drain.drain(inv, Pki(), Odd([status]), "n1", sleep=lambda _: None)
    assert "listing its pods failed" in e.value.message and "bad selector" in e.value.details[0]
