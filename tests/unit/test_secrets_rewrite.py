"""Secrets stored before the encryption config are re-written once every master runs with it (and only then)."""

from dataclasses import replace

import pytest
import requests

from contract.errors import Error
from installer import plan as P
from installer import plan_model
from installer import secrets_rewrite as sr
from installer.render import PATHS, File
from tests.unit.test_plan import control_ok, converged, desired, inv, sha  # noqa: F401  (fixtures)

ENC = PATHS["encryption_config"]


@pytest.fixture
def with_enc(inv, desired):  # noqa: F811
    f = File(b"kind: EncryptionConfig\n", 0o600)
    return {n: (replace(d, files=dict(d.files, **{ENC: f})) if inv.host(n).has("master") else d)
            for n, d in desired.items()}


def rewrite_steps(plan):
    return [(s.host, s.kind, p.name) for p in plan.phases for s in p.steps if s.kind == plan_model.StepKind.REWRITE_SECRETS]


def test_masters_getting_the_encryption_config_re_write_the_secrets_after_the_masters(inv, with_enc):  # noqa: F811
    states = converged(inv, with_enc)
    for n in ("h1", "h2", "h3"):
        f = states[n].facts
        states[n] = plan_model.HostState(replace(f, files={p: s for p, s in f.files.items() if p != ENC}))
    plan = P.build(inv, with_enc, states, control_ok(inv))
    assert rewrite_steps(plan) == [(plan_model.CONTROL, plan_model.StepKind.REWRITE_SECRETS, "addons")]
    names = [p.name for p in plan.phases]
    assert names.index("masters") < names.index("addons")  # after every apiserver restarted with it


def test_converged_masters_re_write_nothing_unless_an_earlier_run_left_it_pending(inv, with_enc):  # noqa: F811
    states = converged(inv, with_enc)
    assert rewrite_steps(P.build(inv, with_enc, states, control_ok(inv))) == []
    plan = P.build(inv, with_enc, states, control_ok(inv), pending={plan_model.CONTROL: {sr.SECRETS_UNIT}})
    assert rewrite_steps(plan) == [(plan_model.CONTROL, plan_model.StepKind.REWRITE_SECRETS, "addons")]
    assert "earlier run" in next(s for p in plan.phases for s in p.steps if s.kind == plan_model.StepKind.REWRITE_SECRETS).reason


class FakeApi:
    def __init__(self, secrets, conflict_once=(), fail=None):
        self.secrets = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in secrets}
        self.conflict_once = set(conflict_once)
        self.fail = fail
        self.puts = []

    def get(self, url, **kw):
        if url.endswith("/api/v1/secrets"):
            return Resp(200, {"items": list(self.secrets.values())})
        ns, name = url.split("/namespaces/")[1].split("/secrets/")
        return Resp(200, dict(self.secrets[(ns, name)], metadata=dict(self.secrets[(ns, name)]["metadata"],
                                                                           resourceVersion="2")))

    def put(self, url, json=None, **kw):
        ns, name = url.split("/namespaces/")[1].split("/secrets/")
        if self.fail == name:
            return Resp(500, {"message": "etcdserver: request timed out"})
        if name in self.conflict_once:
            self.conflict_once.discard(name)
            return Resp(409, {"reason": "Conflict"})
        self.puts.append((ns, name, json["metadata"].get("resourceVersion"), json["kind"]))
        return Resp(200, json)


class Resp:
    def __init__(self, code, body):
        self.status_code, self.body = code, body
        self.text = str(body)

    def json(self):
        return self.body


def secret(ns, name, rv="1"):
    return {"metadata": {"namespace": ns, "name": name, "resourceVersion": rv}, "data": {"k": "dg=="}}


class FakePki:
    def crt_path(self, n):
        return f"/pki/{n}.crt"

    def key_path(self, n):
        return f"/pki/{n}.key"


def test_every_secret_is_put_back_and_a_conflict_is_retried_with_the_current_version(inv):  # noqa: F811
    api = FakeApi([secret("kube-system", "a"), secret("default", "b")], conflict_once=["b"])
    n, summary = sr.rewrite(inv, FakePki(), api)
    assert n == 2 and "2 secret(s)" in summary
    assert api.puts == [("kube-system", "a", "1", "Secret"), ("default", "b", "2", "Secret")]


def test_a_failed_write_is_an_error_naming_the_secret(inv):  # noqa: F811
    with pytest.raises(Error) as e:
        sr.rewrite(inv, FakePki(), FakeApi([secret("kube-system", "a")], fail="a"))
    assert "kube-system/a" in e.value.message and "pending" in e.value.hint


def test_an_unreachable_apiserver_is_an_error(inv):  # noqa: F811
    class Down:
        def get(self, url, **kw):
            raise requests.ConnectionError("refused")

    with pytest.raises(Error) as e:
        sr.rewrite(inv, FakePki(), Down())
    assert "listing" in e.value.message
