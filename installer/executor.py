"""The executor: the only code that changes hosts, and only through connectors. Runs a plan phase by phase,
journals every step and keeps units whose files changed pending until they were restarted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from contract.bundle import layout
from contract.errors import Error
from installer import addons as addons_mod
from installer import checks as checks_mod
from installer import (
    drain,
    etcd_auth,
    etcd_member,
    etcd_membership,
    gates,
    harbor_install,
    plan_model,
    plan_rules,
    secrets_rewrite,
)
from installer import render as render_mod
from installer.hosts.connector import PartialWrite, Upload, failures, run_on
from installer.options import Hosts, Options, first_line
from installer.plan_model import CONTROL, Gate, Name, Plan, Step, StepKind
from installer.site import Site, record_etcd_members

JOURNAL_LINES = 30
GATE_FIRST_PAUSE, GATE_MAX_PAUSE = 0.1, 1.0  # seconds between a gate's probes: doubling from the first to the most
WRITES = (StepKind.PUT, StepKind.BINARY, StepKind.REPO)  # steps that only write files: batched per host


# ------------------------------------------------------------------ executing


class StepFailed(Error):
    """A step failed on a host; the message names host and step."""


@dataclass
class Outcome:
    """What an apply did."""

    plan: Plan
    executed: List[dict] = field(default_factory=list)
    failed: List[dict] = field(default_factory=list)  # the steps that failed (a run stops after their wave)
    seed: Optional[dict] = None
    skipped: List[str] = field(default_factory=list)
    seconds: float = 0.0


class Status(Name):
    """How a step ended, as the journal and the evidence say it."""

    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class StepResult:
    """What a step handler returns: how it ended and one line of detail."""

    status: Status
    detail: str = ""


class Executor:
    """Runs a plan phase by phase: waves in parallel across hosts, gates between."""

    def __init__(self, site: Site, hosts: Hosts, opts: Options) -> None:
        self.site, self.hosts, self.opts = site, hosts, opts
        self.journal = site.state.journal
        self.pending = site.state.pending
        self.outcome: Optional[Outcome] = None

    def run(self, plan: Plan) -> Outcome:
        self.outcome = Outcome(plan)
        t0 = self.opts.clock()
        self.journal.record("run-start", steps=len([s for s in plan.steps if s.acts]))
        try:
            for phase in plan.phases:
                if not phase.waves:
                    continue
                self.opts.out(f"== {phase.name}" + (" (rolling)" if phase.rolling else ""))
                for wave in phase.waves:
                    self._wave(phase.name, wave)
        except Error as e:
            self.journal.record("run-failed", error=e.message)
            raise
        self.journal.record("run-done")
        self.outcome.seconds = self.opts.clock() - t0
        return self.outcome

    def _wave(self, phase: str, wave: plan_model.Wave) -> None:
        by_host: Dict[str, List[Step]] = {}
        for s in wave.steps:
            by_host.setdefault(s.host, []).append(s)

        def host_steps(name: str) -> None:
            steps = by_host[name]
            batch = hasattr(self.hosts[name], "put_many") if any(s.kind in WRITES for s in steps) else False
            i = 0
            while i < len(steps):
                j = i
                while batch and j < len(steps) and steps[j].kind in WRITES:
                    j += 1
                if j - i >= 2:  # consecutive writes of one host: one round trip (put_many), journaled step by step
                    self._writes(phase, steps[i:j])
                    i = j
                else:
                    self._step(phase, steps[i])
                    i += 1

        results = run_on(list(by_host), host_steps, self.opts.max_parallel)
        bad = failures(results)
        if bad:
            first = sorted(bad)[0]
            e = bad[first]
            if len(bad) == 1 and isinstance(e, Error):
                raise e
            raise Error(f"phase {phase} failed on {', '.join(sorted(bad))}", context=f"applying phase {phase}",
                        details=[f"{h}: {first_line(x)}" for h, x in sorted(bad.items())],
                        hint="fix the hosts named, then run apply again: it resumes where this run stopped")
        for g in wave.gates:
            self._step(phase, g, after=tuple(by_host))

    def _step(self, phase: str, s: Step, after: tuple = ()) -> None:
        """Run one step (after: for a gate, the hosts of the wave it guards)."""
        t = self.opts.clock()
        self.opts.out(f"  {s.host:<14} {s.line()}")
        try:
            result = HANDLERS[s.kind](self, s)
            self._learn(s, result)
        except Error as e:
            raise self._failed(phase, s, e, t, after) from None
        self._done(phase, s, result, t)

    def _writes(self, phase: str, steps: List[Step]) -> None:
        """Consecutive file writes of one host in one command (put_many); each step journaled as it ended: those
        wholly written before a failure are done, the one that was being written failed, the rest never ran."""
        t = self.opts.clock()
        uploads: List[Upload] = []
        last: List[int] = []  # per step: the index of its last upload
        for s in steps:
            self.opts.out(f"  {s.host:<14} {s.line()}")
            uploads += self._before_write(s)
            last.append(len(uploads) - 1)
        try:
            self.hosts[steps[0].host].put_many(uploads)
        except PartialWrite as e:
            for s, end in zip(steps, last):
                if end >= e.written:
                    raise self._failed(phase, s, e, t) from None
                self._done(phase, s, self._written(s), t)
        except Error as e:
            raise self._failed(phase, steps[0], e, t) from None
        for s in steps:
            self._done(phase, s, self._written(s), t)

    def _failed(self, phase: str, s: Step, e: Error, t: float, after: tuple = ()) -> StepFailed:
        """Journal a failed step (and keep it in the outcome; after: for a gate, the hosts of the wave it guards);
        the StepFailed to raise."""
        self.journal.record("step", phase=phase, host=s.host, kind=str(s.kind), target=str(s.target),
                            status=Status.FAILED.value, error=e.message, seconds=round(self.opts.clock() - t, 3))
        if self.outcome is not None:
            self.outcome.failed.append(dict(s.to_dict(), phase=phase, status=Status.FAILED.value, error=e.message,
                                            **({"after": [h for h in after if h != CONTROL]} if after else {})))
        if isinstance(e, StepFailed):
            return e
        return StepFailed(f"{s.host}: {s.kind} {s.target} failed in phase {phase}: {e.message}",
                          context=e.context or f"applying phase {phase} on {s.host}", details=e.details,
                          hint=e.hint or "fix the cause, then run apply again: it resumes")

    def _done(self, phase: str, s: Step, result: StepResult, t: float) -> None:
        self.journal.record("step", phase=phase, host=s.host, kind=str(s.kind), target=str(s.target),
                            status=result.status.value, detail=result.detail, seconds=round(self.opts.clock() - t, 3))
        if s.acts:
            self.outcome.executed.append(dict(s.to_dict(), phase=phase, status=result.status.value,
                                              detail=result.detail))
        if result.status is Status.SKIPPED:
            self.outcome.skipped.append(f"{s.host}: {s.target}: {result.detail or s.reason}")

    def _learn(self, s: Step, result: StepResult) -> None:
        """What the run records from a step's result (gates only probe; the writes are here)."""
        if s.kind is StepKind.GATE and s.target is Gate.ETCD_HEALTH and result.status is Status.DONE:
            record_etcd_members(self.site)  # every member answered: the cluster was formed with these

    # -- the step kinds: one handler each (HANDLERS below)
    def _skip(self, s: Step) -> StepResult:
        return StepResult(Status.SKIPPED, f"skipped: {s.reason}")

    def _gate_step(self, s: Step) -> StepResult:
        return StepResult(Status.DONE, self._gate(s))

    def _seed_step(self, s: Step) -> StepResult:
        return StepResult(Status.DONE, self._seed())

    def _harbor_project(self, s: Step) -> StepResult:
        harbor, detail = checks_mod.ensure_project(self.site.inv, self.opts.session, **self.site.registry_access)
        return StepResult(Status.DONE if harbor else Status.SKIPPED, detail)

    def _rewrite_secrets(self, s: Step) -> StepResult:
        n, summary = secrets_rewrite.rewrite(self.site.inv, self.site.pki, self.opts.session)
        self.pending.done(CONTROL, secrets_rewrite.SECRETS_UNIT)
        return StepResult(Status.DONE, summary)

    def _etcd_auth(self, s: Step) -> StepResult:
        return StepResult(Status.DONE, etcd_auth.enable(self.hosts[s.host], self.site.inv.host(s.host)))

    def _etcd_join(self, s: Step) -> StepResult:
        inv = self.site.inv
        return StepResult(Status.DONE, etcd_member.join(self.hosts[s.host], inv, inv.host(s.host),
                                                        members=self.site.state.etcd_members()))

    def _etcd_member_add(self, s: Step) -> StepResult:
        return StepResult(Status.DONE, etcd_membership.run(self.hosts[s.host], s, f"etcd member add {s.target}"))

    def _etcd_member_remove(self, s: Step) -> StepResult:
        return StepResult(Status.DONE, etcd_membership.run(self.hosts[s.host], s, f"etcd member remove {s.target}"))

    def _etcd_member_retire(self, s: Step) -> StepResult:
        done, detail = etcd_membership.retire(self.site, self.hosts, self.opts.connector_for, s)
        return StepResult(Status.DONE if done else Status.SKIPPED, detail)

    def _etcd_members_record(self, s: Step) -> StepResult:
        return StepResult(Status.DONE, etcd_membership.record(self.site.state, self.site.inv, s))

    def _drain(self, s: Step) -> StepResult:
        session = drain.fresh_session(self.opts.session)
        return StepResult(Status.DONE, drain.drain(self.site.inv, self.site.pki, session, str(s.target)))

    def _uncordon(self, s: Step) -> StepResult:
        session = drain.fresh_session(self.opts.session)
        return StepResult(Status.DONE, drain.uncordon(self.site.inv, self.site.pki, session, str(s.target)))

    def _flannel_key(self, s: Step) -> StepResult:
        checks_mod.put_flannel_config(self.site.inv, self.site.pki, self.opts.session, s.command or "")
        return StepResult(Status.DONE, "written")

    def _before_write(self, s: Step) -> List[Upload]:
        """What a write step records before it writes (a crash right after the write still restarts the units /
        applies the manifest), and the files it writes."""
        if s.kind is StepKind.PUT:
            units = tuple(s.units) + ((plan_rules.ADDONS_UNIT,) if addons_mod.is_manifest(s.target) else ())
            if units:
                self.pending.add(s.host, units)
            if s.target == render_mod.PATHS["encryption_config"]:  # the secrets are re-written after the masters
                self.pending.add(CONTROL, (secrets_rewrite.SECRETS_UNIT,))
            return [Upload(s.target, s.file.content, s.file.mode, s.file.owner)]
        if s.kind is StepKind.BINARY:
            if s.units:
                self.pending.add(s.host, s.units)
            return [Upload(s.target, self.site.local[s.source.origin], s.source.mode)]
        repo = self.site.desired[s.host].repo
        return [Upload(path, self.site.local[repo[path].origin], 0o644) for path in s.items]

    @staticmethod
    def _written(s: Step) -> StepResult:
        return StepResult(Status.DONE, f"{len(s.items)} files" if s.kind is StepKind.REPO else "")

    def _put(self, s: Step) -> StepResult:
        (u,) = self._before_write(s)
        self.hosts[s.host].put(u.path, u.content, u.mode, u.owner)
        return self._written(s)

    def _binary(self, s: Step) -> StepResult:
        (u,) = self._before_write(s)
        self.hosts[s.host].put_file(u.path, u.content, u.mode)
        return self._written(s)

    def _repo(self, s: Step) -> StepResult:
        c = self.hosts[s.host]
        for u in self._before_write(s):
            c.put_file(u.path, u.content, u.mode)
        return self._written(s)

    def _command(self, s: Step) -> StepResult:
        r = self.hosts[s.host].run(s.command, timeout=900, check=not s.tolerate)
        if r.rc != 0:
            return StepResult(Status.SKIPPED, f"skipped: exit status {r.rc} tolerated: {r.stderr.strip()[-200:]}")
        return StepResult(Status.DONE)

    def _daemon_reload(self, s: Step) -> StepResult:
        self.hosts[s.host].run("systemctl daemon-reload", timeout=60)
        return StepResult(Status.DONE)

    def _enable(self, s: Step) -> StepResult:
        self.hosts[s.host].run(f"systemctl enable {s.target}", timeout=60)
        return StepResult(Status.DONE)

    def _restart(self, s: Step) -> StepResult:
        r = self.hosts[s.host].run(f"systemctl restart {s.target}", timeout=180, check=False)
        if r.rc != 0:
            raise Error(f"{s.host}: systemctl restart {s.target} failed (exit status {r.rc})",
                        context=f"starting {s.target} on {s.host}",
                        details=[f"{s.target}: {ln}" for ln in self._journal_lines(s.host, s.target)],
                        hint=f"read the unit's log above (journalctl -u {s.target} on {s.host}); fix the "
                             "cause and run apply again")
        self.pending.done(s.host, s.target)
        return StepResult(Status.DONE)

    def _harbor_unpack(self, s: Step) -> StepResult:
        return StepResult(Status.DONE, harbor_install.unpack(self.hosts[s.host], self.site.local[s.source.origin],
                                                             s.source))

    def _harbor_install(self, s: Step) -> StepResult:
        return StepResult(Status.DONE, harbor_install.install(self.hosts[s.host], s.command or ""))

    def _kubectl_apply(self, s: Step) -> StepResult:
        return StepResult(Status.DONE, addons_mod.kubectl_apply(self.hosts[s.host], s.host,
                                                                s.command or plan_rules.KUBECTL_APPLY, self.pending))

    def _journal_lines(self, host: str, unit: str) -> List[str]:
        try:
            r = self.hosts[host].run(f"journalctl -u {unit} -n {JOURNAL_LINES} --no-pager", timeout=20, check=False)
            return r.stdout.strip().splitlines()[-JOURNAL_LINES:]
        except Error as e:
            return [f"(journal not readable: {e.message})"]

    def _seed(self) -> str:
        from installer.registry import seed

        inv = self.site.inv
        client = checks_mod.registry_client(inv, self.opts.session, **self.site.registry_access)
        report = seed.push_missing(self.site.bundle.dir / layout.IMAGES_DIR, client, inv.registry.project,
                                   naming=self.site.naming)
        self.outcome.seed = report.as_dict()
        return report.summary()

    def _gate(self, s: Step) -> str:
        """Poll the gate's probe until it holds or the deadline passes; then fail naming the hosts, with their
        units' journals. Returns the probe's detail."""
        handler = gates.HANDLERS[s.target]
        env = gates.Env(self.site, self.opts.session, self._journal_lines,
                        lambda host: harbor_install.log_tail(self.hosts[host]))
        timeout = self.opts.harbor_timeout if handler.slow else self.opts.gate_timeout
        deadline = self.opts.clock() + timeout
        probe = handler.probe(env, s)
        pause = GATE_FIRST_PAUSE
        while True:
            ok, detail = probe()
            if ok:
                return detail
            if self.opts.clock() > deadline:
                break
            self.opts.sleep(pause)  # soon after the restart it guards, then at most once a second
            pause = min(pause * 2, GATE_MAX_PAUSE)
        raise handler.error(env, s, handler.blame(env, s), detail, timeout)


HANDLERS: Dict[StepKind, Callable[[Executor, Step], StepResult]] = {
    StepKind.SKIP: Executor._skip,
    StepKind.GATE: Executor._gate_step,
    StepKind.SEED: Executor._seed_step,
    StepKind.HARBOR_PROJECT: Executor._harbor_project,
    StepKind.REWRITE_SECRETS: Executor._rewrite_secrets,
    StepKind.FLANNEL_KEY: Executor._flannel_key,
    StepKind.ETCD_AUTH: Executor._etcd_auth,
    StepKind.ETCD_JOIN: Executor._etcd_join,
    StepKind.ETCD_MEMBER_ADD: Executor._etcd_member_add,
    StepKind.ETCD_MEMBER_REMOVE: Executor._etcd_member_remove,
    StepKind.ETCD_MEMBER_RETIRE: Executor._etcd_member_retire,
    StepKind.ETCD_MEMBERS_RECORD: Executor._etcd_members_record,
    StepKind.DRAIN: Executor._drain,
    StepKind.UNCORDON: Executor._uncordon,
    StepKind.PUT: Executor._put,
    StepKind.BINARY: Executor._binary,
    StepKind.REPO: Executor._repo,
    StepKind.PACKAGES: Executor._command,
    StepKind.COMMAND: Executor._command,
    StepKind.DAEMON_RELOAD: Executor._daemon_reload,
    StepKind.ENABLE: Executor._enable,
    StepKind.RESTART: Executor._restart,
    StepKind.HARBOR_UNPACK: Executor._harbor_unpack,
    StepKind.HARBOR_INSTALL: Executor._harbor_install,
    StepKind.KUBECTL_APPLY: Executor._kubectl_apply,
}
