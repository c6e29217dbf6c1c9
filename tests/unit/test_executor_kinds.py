"""The executor: one handler per step kind and per gate, typed step results, gates that only probe."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import requests

from contract.errors import Error
from installer import apply as A
from installer import checks, executor, gates
from installer.hosts.connector import Result
from installer.plan_model import CONTROL, Gate, Plan, Step, StepKind
from installer.state import StateDir
from tests.unit.test_plan import inv  # noqa: F401  (fixture)


def test_every_step_kind_and_every_gate_has_exactly_one_handler():
    assert set(executor.HANDLERS) == set(StepKind)
    assert set(gates.HANDLERS) == set(Gate)


def test_steps_carry_their_kind_and_gate_as_types_and_read_as_before():
    gate = Step(CONTROL, "gate", "etcd-health", "every member answers")
    assert gate.kind is StepKind.GATE and gate.target is Gate.ETCD_HEALTH
    assert gate.line() == "wait for etcd-health: every member answers"
    assert json.dumps(gate.to_dict()) == ('{"host": "control", "kind": "gate", "target": "etcd-health", '
                                          '"reason": "every member answers"}')
    assert f"{Step('h1', 'put', '/etc/x', 'new file').kind:<6}|" == "put   |"
    with pytest.raises(Error, match="unknown step kind or gate"):
        Step("h1", "reboot", "now", "why not")
    with pytest.raises(Error, match="unknown step kind or gate"):
        Step(CONTROL, "gate", "moon-phase", "full")


class Conn:
    def __init__(self, rc: int = 0):
        self.rc = rc

    def run(self, cmd, **kw):
        return Result(self.rc, "", "no such package: frobnicate\n")


def executor_for(inventory, tmp_path, hosts=None):
    site = SimpleNamespace(inv=inventory, pki=None, registry_access={}, state=StateDir(tmp_path).ensure())
    opts = A.Options(connector_for=None, session=requests.Session(), gate_timeout=0.0, sleep=lambda s: None)
    ex = A.Executor(site, hosts or {}, opts)
    ex.outcome = executor.Outcome(Plan((), ()))
    return ex, site


def journal_steps(site):
    return [e for e in site.state.journal.entries() if e["event"] == "step"]


def test_the_etcd_gate_only_probes_and_the_executor_records_the_members(monkeypatch, inv, tmp_path):  # noqa: F811
    monkeypatch.setattr(checks, "etcd_health", lambda inv, pki, session: [
        checks.Result("etcd health", m.name, True, "healthy") for m in inv.etcd_members])
    ex, site = executor_for(inv, tmp_path)
    gate = Step(CONTROL, StepKind.GATE, Gate.ETCD_HEALTH, "every member answers",
                items=tuple(m.name for m in inv.etcd_members), units=("etcd",))
    assert "healthy" in ex._gate(gate)
    assert site.state.etcd_members() is None  # probing wrote nothing
    ex._step("etcd", gate)
    assert site.state.etcd_members() == {m.name: m.address for m in inv.etcd_members}
    assert [(e["kind"], e["target"], e["status"]) for e in journal_steps(site)] == [("gate", "etcd-health", "done")]


def test_a_tolerated_failure_is_a_skipped_step_with_the_same_text(inv, tmp_path):  # noqa: F811
    ex, site = executor_for(inv, tmp_path, {"h1": Conn(rc=1)})
    step = Step("h1", StepKind.COMMAND, "modprobe", "load modules", command="modprobe x", tolerate=True)
    ex._step("os-prep", step)
    detail = "skipped: exit status 1 tolerated: no such package: frobnicate"
    assert [(e["status"], e["detail"]) for e in journal_steps(site)] == [("skipped", detail)]
    assert ex.outcome.executed[0]["status"] == "skipped" and ex.outcome.skipped == [f"h1: modprobe: {detail}"]
    ex._step("os-prep", Step("h1", StepKind.SKIP, "selinux", "container host"))
    assert journal_steps(site)[-1]["status"] == "skipped"
    assert ex.outcome.skipped[-1] == "h1: selinux: skipped: container host"
    assert len(ex.outcome.executed) == 1  # a skip line changes nothing


@pytest.mark.parametrize("harbor,answer,status", [
    (False, "skipped: not Harbor (no /api/systeminfo): a plain registry has no projects", "skipped"),
    (True, "project kubernetes exists", "done"),
    (True, "skipped-looking text from Harbor is still done", "done")])  # the type decides, never the text
def test_the_harbor_project_step_is_skipped_on_a_plain_registry(monkeypatch, inv, tmp_path, harbor,  # noqa: F811
                                                                 answer, status):
    monkeypatch.setattr(checks, "ensure_project", lambda inv, session, **kw: (harbor, answer))
    ex, site = executor_for(inv, tmp_path)
    ex._step("registry", Step(CONTROL, StepKind.HARBOR_PROJECT, "kubernetes", "create the project"))
    assert [(e["status"], e["detail"]) for e in journal_steps(site)] == [(status, answer)]
    assert (ex.outcome.skipped == [f"control: kubernetes: {answer}"]) is (status == "skipped")


def test_a_gate_probes_soon_after_its_restart_then_at_most_once_a_second(monkeypatch, inv, tmp_path):  # noqa: F811
    answers = iter([False] * 6 + [True])
    monkeypatch.setattr(checks, "apiserver_healthz", lambda *a: (next(answers), "ok"))
    ex, site = executor_for(inv, tmp_path)
    pauses = []
    ex.opts = A.Options(connector_for=None, session=requests.Session(), gate_timeout=60.0, sleep=pauses.append,
                        clock=lambda: 0.0)
    gate = Step("h1", StepKind.GATE, Gate.APISERVER_HEALTHZ, "https://198.18.0.11:6443/healthz")
    assert ex._gate(gate) == "ok"
    assert pauses == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
