"""The executor: the only code that changes hosts, and only through connectors. Runs a plan phase by phase,
journals every step and keeps units whose files changed pending until they were restarted.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from installer import addons as addons_mod
from installer import checks as checks_mod
from installer import harbor_install, plan_model, plan_rules, secrets_rewrite
from installer import plan as plan_mod
from installer import render as render_mod
from installer.bundle import layout
from installer.errors import Error
from installer.hosts.connector import failures, run_on
from installer.options import Hosts, Options, first_line
from installer.plan_model import CONTROL, Plan, Step
from installer.site import Site, record_etcd_members

JOURNAL_LINES = 30


# ------------------------------------------------------------------ executing


class StepFailed(Error):
    """A step failed on a host; the message names host and step."""


@dataclass
class Outcome:
    """What an apply did."""

    plan: Plan
    executed: List[dict] = field(default_factory=list)
    seed: Optional[dict] = None
    skipped: List[str] = field(default_factory=list)
    seconds: float = 0.0


def _etcd_ok(inv, pki, session, members: Sequence[str]) -> Tuple[bool, str]:
    """All of `members` (every member when empty) answer /health."""
    results = [r for r in checks_mod.etcd_health(inv, pki, session) if not members or r.target in members]
    return checks_mod.all_ok(results)


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
            for s in by_host[name]:
                self._step(phase, s)

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
            self._step(phase, g)

    def _step(self, phase: str, s: Step) -> None:
        t = self.opts.clock()
        self.opts.out(f"  {s.host:<14} {s.line()}")
        status, detail = "done", ""
        try:
            detail = self._do(s) or ""
            if detail.startswith("skipped"):
                status = "skipped"
        except Error as e:
            self.journal.record("step", phase=phase, host=s.host, kind=s.kind, target=s.target, status="failed",
                                error=e.message, seconds=round(self.opts.clock() - t, 3))
            if isinstance(e, StepFailed):
                raise
            raise StepFailed(f"{s.host}: {s.kind} {s.target} failed in phase {phase}: {e.message}",
                             context=e.context or f"applying phase {phase} on {s.host}", details=e.details,
                             hint=e.hint or "fix the cause, then run apply again: it resumes") from None
        self.journal.record("step", phase=phase, host=s.host, kind=s.kind, target=s.target, status=status,
                            detail=detail, seconds=round(self.opts.clock() - t, 3))
        if s.acts:
            self.outcome.executed.append(dict(s.to_dict(), phase=phase, status=status, detail=detail))
        if status == "skipped" or s.kind == "skip":
            self.outcome.skipped.append(f"{s.host}: {s.target}: {detail or s.reason}")

    # -- the step kinds
    def _do(self, s: Step) -> Optional[str]:
        site, pend = self.site, self.pending
        if s.kind == "skip":
            return f"skipped: {s.reason}"
        if s.kind == "gate":
            return self._gate(s)
        if s.kind == "seed":
            return self._seed()
        if s.kind == "harbor-project":
            return checks_mod.ensure_project(site.inv, self.opts.session, **site.registry_access)
        if s.kind == secrets_rewrite.STEP_KIND:
            n, summary = secrets_rewrite.rewrite(site.inv, site.pki, self.opts.session)
            pend.done(CONTROL, secrets_rewrite.SECRETS_UNIT)
            return summary
        if s.kind == "flannel-key":
            checks_mod.put_flannel_config(site.inv, site.pki, self.opts.session, s.command or "")
            return "written"
        c = self.hosts[s.host]
        if s.kind == "put":
            # before the write: a crash right after it still restarts the units / applies the manifest
            units = tuple(s.units) + ((plan_rules.ADDONS_UNIT,) if addons_mod.is_manifest(s.target) else ())
            if units:
                pend.add(s.host, units)
            if s.target == render_mod.PATHS["encryption_config"]:  # the secrets are re-written after the masters
                pend.add(CONTROL, (secrets_rewrite.SECRETS_UNIT,))
            c.put(s.target, s.file.content, s.file.mode, s.file.owner)
        elif s.kind == "binary":
            if s.units:
                pend.add(s.host, s.units)
            c.put_file(s.target, site.local[s.source.origin], s.source.mode)
        elif s.kind == "repo":
            for path in s.items:
                src = site.desired[s.host].repo[path]
                c.put_file(path, site.local[src.origin], 0o644)
            return f"{len(s.items)} files"
        elif s.kind in ("packages", "command"):
            r = c.run(s.command, timeout=900, check=not s.tolerate)
            if r.rc != 0:
                return f"skipped: exit status {r.rc} tolerated: {r.stderr.strip()[-200:]}"
        elif s.kind == "daemon-reload":
            c.run("systemctl daemon-reload", timeout=60)
        elif s.kind == "enable":
            c.run(f"systemctl enable {s.target}", timeout=60)
        elif s.kind == "restart":
            r = c.run(f"systemctl restart {s.target}", timeout=180, check=False)
            if r.rc != 0:
                raise Error(f"{s.host}: systemctl restart {s.target} failed (exit status {r.rc})",
                            context=f"starting {s.target} on {s.host}",
                            details=[f"{s.target}: {ln}" for ln in self._journal_lines(s.host, s.target)],
                            hint=f"read the unit's log above (journalctl -u {s.target} on {s.host}); fix the "
                                 "cause and run apply again")
            pend.done(s.host, s.target)
        elif s.kind == "harbor-unpack":
            return harbor_install.unpack(c, site.local[s.source.origin], s.source)
        elif s.kind == "harbor-install":
            return harbor_install.install(c, s.command or "")
        elif s.kind == "kubectl-apply":
            return addons_mod.kubectl_apply(c, s.host, s.command or plan_rules.KUBECTL_APPLY, pend)
        else:
            raise Error(f"unknown step kind {s.kind!r}", hint="this is a bug: report it")
        return None

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
        """Poll a health condition until it holds or the deadline passes; then fail with the units' journals."""
        inv, pki, session = self.site.inv, self.site.pki, self.opts.session
        timeout = self.opts.harbor_timeout if s.target == "harbor-api" else self.opts.gate_timeout
        deadline = self.opts.clock() + timeout
        probe: Callable[[], Tuple[bool, str]]
        if s.target == "harbor-api":
            probe = functools.partial(harbor_install.probe, checks_mod.registry_base(inv), session,
                                      self.site.registry_access.get("verify", True))
        elif s.target in ("etcd-health", plan_mod.ETCD_OTHERS_HEALTHY):
            probe = functools.partial(_etcd_ok, inv, pki, session, s.items)
        elif s.target == "apiserver-healthz":
            probe = functools.partial(checks_mod.apiserver_healthz, inv, pki, session, inv.host(s.host).address,
                                      inv.cluster.apiserver_port)
        elif s.target == "vip-healthz":
            probe = functools.partial(checks_mod.apiserver_healthz, inv, pki, session, inv.cluster.vip,
                                      inv.cluster.lb_port)
        elif s.target == "node-ready":
            probe = functools.partial(checks_mod.nodes_ready, inv, pki, session, s.items)
        else:
            raise Error(f"unknown gate {s.target!r}", hint="this is a bug: report it")
        detail = ""
        while True:
            ok, detail = probe()
            if ok:
                if s.target == "etcd-health":
                    record_etcd_members(self.site)
                return detail
            if self.opts.clock() > deadline:
                break
            self.opts.sleep(1.0)
        hosts = list(s.items) if s.items else [s.host]
        hosts = [h for h in hosts if h != CONTROL]
        if s.target in ("etcd-health", plan_mod.ETCD_OTHERS_HEALTHY):  # exactly the members that are not healthy
            hosts = [r.target for r in checks_mod.etcd_health(inv, pki, session) if not r.ok and r.target in hosts]
            hosts = hosts or [m.name for m in inv.etcd_members if m.name in s.items]
        if s.target == plan_mod.ETCD_OTHERS_HEALTHY:
            raise Error(f"{', '.join(hosts)}: etcd not healthy, so no other member is restarted (that would lose "
                        f"quorum): {detail}", context=f"waiting {timeout:.0f} s for {s.reason}",
                        details=[f"{h} etcd: {ln}" for h in hosts for ln in self._journal_lines(h, "etcd")[-10:]],
                        hint=f"start or repair etcd on {', '.join(hosts)} (systemctl status etcd; journalctl -u "
                             f"etcd), then run apply again: members already restarted stay done, the rest follow "
                             f"one at a time")
        lines = []
        for h in hosts:
            for u in s.units:
                lines += [f"{h} {u}: {ln}" for ln in self._journal_lines(h, u)[-10:]]
        if s.target == "harbor-api":
            lines += harbor_install.log_tail(self.hosts[hosts[0]])
        raise Error(f"{', '.join(hosts) or s.host}: health gate {s.target} not reached within "
                    f"{timeout:.0f} s: {detail}", context=f"waiting for {s.reason}",
                    details=lines, hint="the unit logs above usually say why; fix it and run apply again "
                                        "(it resumes: changed units are still restarted)")
