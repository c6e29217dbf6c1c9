"""`installer apply`: verify the bundle, unpack, PKI, render, gather facts, plan, execute phase by phase, check.

The executor is the only code that changes hosts, and only through connectors. Every executed step is
journaled in the state directory; units whose files changed are kept in `pending.json` until they were
restarted, so a run that stopped midway (host unreachable, gate failed) is finished by the next one.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import requests

from installer import addons as addons_mod
from installer import checks as checks_mod
from installer import egress, etcd_backup, harbor_install, secrets_rewrite
from installer import facts as facts_mod
from installer import pki as pki_mod
from installer import plan as plan_mod
from installer import render as render_mod
from installer.bundle import layout
from installer.errors import Error
from installer.hosts.connector import Connector, failures, run_on
from installer.inventory import Host, Inventory
from installer.plan import CONTROL, ControlState, HostDesired, HostState, Plan, Source, Step
from installer.state import StateDir

Out = Callable[[str], None]
JOURNAL_LINES = 30
EXTRA_UNITS = ("firewalld", "systemd-sysctl")

# binary name -> (tarball glob in binaries/, member path suffix inside it)
BINARY_SOURCES = {
    **{n: ("kubernetes-server-linux-amd64.tar.gz", f"kubernetes/server/bin/{n}")
       for n in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet", "kube-proxy")},
    "etcd": ("etcd-v*-linux-amd64.tar.gz", "/etcd"),
    "etcdctl": ("etcd-v*-linux-amd64.tar.gz", "/etcdctl"),
    "flanneld": ("flannel-v*-linux-amd64.tar.gz", "flanneld"),
    "mk-docker-opts.sh": ("flannel-v*-linux-amd64.tar.gz", "mk-docker-opts.sh"),
}
CNI_ARCHIVE = "cni-plugins-amd64-v*.tgz"
COMPONENT_VERSIONS = {"binary/kubernetes-server": "kubernetes", "binary/etcd": "etcd", "binary/flannel": "flannel",
                      "binary/cni-plugins": "cni", "rpm/docker-ce": "docker", "rpm/haproxy": "haproxy",
                      "rpm/keepalived": "keepalived"}


SETTLE_TRIES, SETTLE_PAUSE = 10, 3.0


@dataclass
class Options:
    """Injected collaborators and knobs (tests pass their own)."""

    connector_for: Callable[[Inventory, Host], Connector]
    session: requests.Session
    out: Out = lambda line: None
    max_parallel: int = 10
    gate_timeout: float = 120.0
    harbor_timeout: float = 600.0  # Harbor's containers take minutes after install.sh on a real host
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    checks: bool = True  # run the cluster checks after executing


def ssh_connectors(known_hosts: str, host_keys: str,
                   out: Out = lambda line: None) -> Callable[[Inventory, Host], Connector]:
    """The default connector factory: OpenSSH with the inventory's settings and the host key policy."""
    from installer.hosts.known_hosts import check_mode
    from installer.hosts.ssh import SshConnector

    check_mode(host_keys)

    def make(inv: Inventory, host: Host) -> Connector:
        return SshConnector.for_host(inv, host, known_hosts=known_hosts, host_keys=host_keys, out=out)

    return make


def default_session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # the air-gapped site has no proxy for cluster addresses
    return s


# ------------------------------------------------------------------ the bundle


@dataclass(frozen=True)
class Bundle:
    """The verified, unpacked bundle in the state directory."""

    dir: Path
    digest: str  # sha256 of the signed manifest bytes
    fingerprint: str
    name: str
    version: str
    components: Mapping[str, str]
    reused: bool
    files: Mapping[str, str] = field(default_factory=dict, repr=False)  # path -> sha256, from the signed manifest


def prepare_bundle(bundle_path: Path, pub: Path, state: StateDir, out: Out) -> Bundle:
    """Verify signature and every hash, then unpack into the state dir, or reuse the same unpacked bundle."""
    from installer import bundle as fmt

    key = fmt.load_public_key(pub)
    manifest, manifest_bytes, _ = fmt.read_manifest(bundle_path, key)  # signature first: cheap and decisive
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    info = state.bundle_info()
    target = state.root / f"bundle-{digest[:16]}"
    if info and info.get("manifest_sha256") == digest and target.is_dir():
        out(f"bundle: verifying {bundle_path} (same bundle as unpacked: reusing {target})")
        report = fmt.verify_bundle(bundle_path, key)
        reused = True
    else:
        out(f"bundle: verifying and unpacking {bundle_path}")
        if target.exists():
            shutil.rmtree(target)  # a half-trusted leftover: never reused without its bundle.json
        report = fmt.unpack_bundle(bundle_path, key, target)
        for old in state.root.glob("bundle-*"):
            if old != target and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        state.set_bundle_info({"manifest_sha256": digest, "fingerprint": report.fingerprint, "dir": str(target),
                               "name": report.name, "version": report.version, "bundle": str(bundle_path)})
        reused = False
    if report.not_checked:
        out(f"bundle: verified with the {report.key_type} key {report.fingerprint}; "
            f"{', '.join(report.not_checked)} not checked (no Ed25519 key given)")
    return Bundle(target, digest, report.fingerprint, report.name, report.version, dict(manifest.components), reused,
                  {f.path: f.sha256 for f in manifest.files})


def _find_archive(bundle: Bundle, pattern: str) -> Path:
    found = layout.find_binary(bundle.dir, pattern)
    if found is None:
        raise Error(f"the bundle has no {layout.stored_binary_name(pattern)} in {layout.BINARIES_DIR}/",
                    context="collecting binaries",
                    hint="build the bundle with the default spec (kubernetes-server, etcd, flannel, cni-plugins)")
    return found


def extract_binaries(bundle: Bundle, state: StateDir, names: Sequence[str]) -> Dict[str, Tuple[Path, Source]]:
    """{name: (local file, Source)} for every executable asked, extracted once per bundle into the state dir."""
    dest = state.binaries_dir(bundle.digest)
    dest.mkdir(parents=True, exist_ok=True)
    wanted: Dict[str, Tuple[str, str]] = {}
    for n in names:
        if n in BINARY_SOURCES:
            wanted[n] = BINARY_SOURCES[n]
        else:
            wanted[n] = (CNI_ARCHIVE, n)  # a CNI plugin: ./bridge, ./flannel, ...
    out: Dict[str, Tuple[Path, Source]] = {}
    by_archive: Dict[str, List[str]] = {}
    for n, (pattern, _member) in wanted.items():
        if not (dest / n).exists():
            by_archive.setdefault(pattern, []).append(n)
    for pattern, ns in by_archive.items():
        archive = _find_archive(bundle, pattern)
        with tarfile.open(archive, "r:*") as tar:
            members = {m.name.lstrip("./"): m for m in tar.getmembers() if m.isfile()}
            for n in ns:
                suffix = wanted[n][1]
                m = next((mem for name, mem in members.items()
                          if name == suffix.lstrip("/") or name.endswith("/" + suffix.lstrip("/"))), None)
                if m is None:
                    raise Error(f"{archive.name} has no {suffix}", context="collecting binaries",
                                hint="the bundle's release tarball does not have the upstream layout")
                src = tar.extractfile(m)
                tmp = dest / f".{n}.tmp"
                with open(tmp, "wb") as f:
                    shutil.copyfileobj(src, f)
                tmp.chmod(0o755)
                tmp.rename(dest / n)
    for n, (pattern, member) in wanted.items():
        p = dest / n
        digest = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        out[n] = (p, Source(digest.hexdigest(), f"{pattern}!{member}", 0o755))
    return out


def repo_files(bundle: Bundle) -> Dict[str, Tuple[Path, Source]]:
    """{remote path under REPO_DIR: (local file, Source)} of the bundle's yum repository, sha256 from the manifest."""
    out = {}
    prefix = layout.RPMS_DIR + "/"
    for path, sha in sorted(bundle.files.items()):
        if path.startswith(prefix):
            out[f"{plan_mod.REPO_DIR}/{path[len(prefix):]}"] = (bundle.dir / path, Source(sha, path, 0o644))
    return out


RPM_GPG_DIR = "/etc/pki/rpm-gpg"


def rpm_keys(bundle: Bundle) -> Dict[str, render_mod.File]:
    """{/etc/pki/rpm-gpg/<key>: File} for every repo signing key the bundle ships (verified with the bundle)."""
    prefix = layout.RPM_KEYS_DIR + "/"
    return {f"{RPM_GPG_DIR}/{path[len(prefix):]}": render_mod.File((bundle.dir / path).read_bytes(), 0o644)
            for path in sorted(bundle.files) if path.startswith(prefix)}


def image_roles(bundle: Bundle, inv: Inventory) -> Tuple[Dict[str, str], str]:
    """({role: reference in the site registry}, naming rule) from the bundle's spec and image layout."""
    return egress.image_roles(bundle.dir, inv)  # one implementation: `installer check` renders the same images


def versions_of(bundle: Bundle) -> Dict[str, str]:
    return {v: bundle.components[k] for k, v in COMPONENT_VERSIONS.items() if k in bundle.components}


# ------------------------------------------------------------------ desired state


@dataclass
class Site:
    """Everything derived from bundle + inventory + PKI that planning and executing need."""

    inv: Inventory
    state: StateDir
    bundle: Bundle
    pki: pki_mod.Pki
    desired: Dict[str, HostDesired]
    local: Dict[str, Path]  # origin of a binary/repo Source -> local file
    images: Dict[str, str]
    naming: str
    pki_report: Optional[pki_mod.IssueReport] = None
    registry_host: Optional[Host] = None  # install mode: the Harbor host (its desired state is in `desired`)
    registry_access: Dict[str, object] = field(default_factory=dict)  # install mode: password and CA for clients


def desired_state(inv: Inventory, bundle: Bundle, state: StateDir, pki: pki_mod.Pki) -> Site:
    """Render every host's files, add binaries, repo, packages and units; addons go to the first master."""
    images, naming = image_roles(bundle, inv)
    versions = versions_of(bundle)
    material = {h.name: pki.material_for(inv, h) for h in inv.hosts}
    keys = rpm_keys(bundle)
    rendered = render_mod.render_all(inv, pki_files=material, images=images, versions=versions,
                                     gpgcheck=bool(keys), gpgkey=[f"file://{p}" for p in sorted(keys)],
                                     unchecked_repo=layout.has_unchecked_repo(bundle.files))
    names = sorted({p.rsplit("/", 1)[-1] for h in inv.hosts for p in render_mod.binaries_for(h)})
    bins = extract_binaries(bundle, state, names)
    repo = repo_files(bundle)
    local = {src.origin: path for path, src in bins.values()}
    local.update({src.origin: path for path, src in repo.values()})
    addon_files = addons_mod.files(bundle.dir / layout.MANIFESTS_DIR, inv, images)
    desired = {}
    reg_host = harbor_install.registry_host(inv)
    if reg_host is not None:
        d, reg_local = harbor_install.desired(inv, bundle.dir, bundle.files, pki, state.root, keys,
                                              {p: s for p, (_l, s) in repo.items()}, versions)
        desired[reg_host.name] = d
        local.update(reg_local)
    for h in inv.hosts:
        files = dict(rendered[h.name])
        if inv.masters and h.name == inv.masters[0].name:
            files.update(addon_files)
        pkgs = plan_mod.wanted_packages(h)
        if pkgs:
            files.update(keys)  # yum checks every package against the bundle's pinned keys (gpgcheck=1)
        desired[h.name] = HostDesired(
            files=files,
            binaries={p: bins[p.rsplit("/", 1)[-1]][1] for p in render_mod.binaries_for(h)},
            repo={p: s for p, (_l, s) in repo.items()} if pkgs else {},
            packages=pkgs,
            units=plan_mod.wanted_units(h),
        )
    return Site(inv, state, bundle, pki, desired, local, images, naming, registry_host=reg_host,
                registry_access=harbor_install.access(inv, state.root, pki.crt_path("ca")))


# ------------------------------------------------------------------ facts


class Hosts:
    """Open connectors by host name, created on first use, closed together."""

    def __init__(self, inv: Inventory, opts: Options) -> None:
        self.inv, self.opts = inv, opts
        self._conns: Dict[str, Connector] = {}

    def __getitem__(self, name: str) -> Connector:
        if name not in self._conns:
            reg = harbor_install.registry_host(self.inv)
            host = reg if reg is not None and name == reg.name else self.inv.host(name)
            self._conns[name] = self.opts.connector_for(self.inv, host)
        return self._conns[name]

    def close(self) -> None:
        for c in self._conns.values():
            try:
                c.close()
            except Exception:  # closing must never hide the real outcome
                pass
        self._conns.clear()


def gather_states(site: Site, hosts: Hosts, names: Sequence[str], opts: Options) -> Dict[str, HostState]:
    """Facts of every host in parallel, plus the current content of changed text files (for diffs)."""

    def one(name: str) -> HostState:
        d = site.desired[name]
        units = list(d.units) + list(EXTRA_UNITS)
        f = facts_mod.gather(hosts[name], d.managed_paths(), units)
        contents = {}
        for path, want in d.files.items():
            have = f.files.get(path)
            if have is not None and have.sha256 != hashlib.sha256(want.content).hexdigest() \
                    and not plan_mod.is_secret(path, want):
                contents[path] = hosts[name].get(path)
        return HostState(f, contents)

    results = run_on(names, one, opts.max_parallel)
    bad = failures(results)
    if bad:
        raise Error(f"cannot read the state of {len(bad)} host(s): {', '.join(sorted(bad))}",
                    context="gathering facts before planning",
                    details=[f"{h}: {_first_line(e)}" for h, e in sorted(bad.items())],
                    hint="check that each host is up and reachable over ssh with the inventory's user and key; "
                         "nothing was changed")
    return {n: r for n, r in results.items()}  # type: ignore[misc]


def _first_line(e: BaseException) -> str:
    if isinstance(e, Error):
        return e.message + (f" ({'; '.join(e.details[-2:])})" if e.details else "")
    return f"{type(e).__name__}: {e}"


def control_state(site: Site, session: requests.Session) -> ControlState:
    """Registry and etcd as the control host sees them (unknown when unreachable: the plan then acts)."""
    inv = site.inv
    missing: Optional[Tuple[str, ...]] = None
    total = 0
    up: Optional[bool] = None
    detail = ""
    if inv.registry.mode == "install":
        up, detail = harbor_install.probe(checks_mod.registry_base(inv), session,
                                          site.registry_access.get("verify", True))
    if up is not False:
        try:
            missing, total = checks_mod.images_missing(inv, site.bundle.dir / layout.IMAGES_DIR, site.naming, session,
                                                       **site.registry_access)
        except Error:
            missing = None
    value = checks_mod.flannel_config(inv, site.pki, session)
    unhealthy = tuple(r.target for r in checks_mod.etcd_health(inv, site.pki, session) if not r.ok)
    return ControlState(images_missing=missing, images_total=total, flannel_config=value, harbor_up=up,
                        harbor_detail=detail, etcd_unhealthy=unhealthy)


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

    def _wave(self, phase: str, wave: plan_mod.Wave) -> None:
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
                        details=[f"{h}: {_first_line(x)}" for h, x in sorted(bad.items())],
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
            units = tuple(s.units) + ((plan_mod.ADDONS_UNIT,) if addons_mod.is_manifest(s.target) else ())
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
            return addons_mod.kubectl_apply(c, s.host, s.command or plan_mod.KUBECTL_APPLY, pend)
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


# ------------------------------------------------------------------ the command


def load_site(inventory: Path, bundle_path: Path, pub: Path, state_dir: Path, out: Out,
              renew: bool = False) -> Site:
    """Inventory, verified bundle, PKI and desired state (nothing on hosts yet)."""
    from installer import inventory as inventory_mod

    inv = inventory_mod.load(Path(inventory))
    state = StateDir(state_dir).ensure()
    bundle = prepare_bundle(Path(bundle_path), Path(pub), state, out)
    p = pki_mod.Pki(state.root)
    report = p.ensure(inv)
    site = desired_state(inv, bundle, state, p)
    site.pki_report = report
    return site


def make_plan(site: Site, hosts: Hosts, opts: Options, focus: Optional[Sequence[str]] = None) -> Plan:
    """Gather facts of the hosts concerned and plan."""
    names = [h.name for h in site.inv.hosts]
    if site.registry_host is not None:
        names.append(site.registry_host.name)
    recorded = site.state.etcd_members()
    problem = plan_mod.etcd_membership_problem(recorded, site.inv)
    if problem:
        raise Error(f"the inventory changes the members of the running etcd cluster: {problem}",
                    context="planning the etcd phase",
                    hint=f"apply forms the etcd cluster once and does not add or remove members: keep the etcd "
                         f"role on exactly {', '.join(sorted(recorded or {}))} (recorded in "
                         f"{site.state.root / 'etcd-members.json'}), or change the membership by hand with "
                         "`etcdctl member add/remove` and update that file; nothing was changed")
    states = gather_states(site, hosts, names, opts)
    control = control_state(site, opts.session)
    plan = plan_mod.build(site.inv, site.desired, states, control, pending=site.state.pending.load(), focus=focus,
                          registry_host=site.registry_host)
    return dataclasses.replace(plan, images=images_report(site))


def images_report(site: Site, registry: Optional[object] = None) -> egress.Report:
    """Every image reference of the desired state, judged against the bundle (and a registry client if given)."""
    r = site.inv.registry
    bundle = egress.bundle_images(site.bundle.dir / layout.IMAGES_DIR, r.endpoint, r.project, site.naming)
    return egress.scan({h: d.files for h, d in site.desired.items()}, r.endpoint, bundle, registry)


def images_results(site: Site, session: requests.Session) -> List[checks_mod.Result]:
    """The check "images (zero egress)" after apply: every reference in the site registry with the bundle's digest."""
    try:
        registry = checks_mod.registry_client(site.inv, session, **site.registry_access)
        return egress.results(images_report(site, registry))
    except Error as e:  # e.g. an unreadable password file: a failed check, not a crash after a good apply
        return [checks_mod.Result(egress.CHECK_NAME, site.inv.registry.endpoint, False, e.message)]


def plan_command(inventory: Path, bundle_path: Path, pub: Path, state_dir: Path, opts: Options):
    """`installer plan`: what apply would do now (a dryrun.PlanResult); the state directory is only read."""
    from installer import dryrun

    with dryrun.scratch(Path(state_dir)) as scratch:  # whatever loading the site writes goes to a scratch copy
        site = load_site(inventory, bundle_path, pub, scratch.root, opts.out)
        hosts = Hosts(site.inv, opts)
        try:
            plan = make_plan(site, hosts, opts)
        finally:
            hosts.close()
        return scratch.result(plan, site)


def apply_command(inventory: Path, bundle_path: Path, pub: Path, state_dir: Path, opts: Options,
                  focus: Optional[Sequence[str]] = None) -> dict:
    """`installer apply` (and add-node with focus): the whole pipeline; returns the evidence report."""
    t0 = opts.clock()
    site = load_site(inventory, bundle_path, pub, state_dir, opts.out)
    hosts = Hosts(site.inv, opts)
    try:
        plan = make_plan(site, hosts, opts, focus=focus)
        if plan.problems:
            raise Error(f"preflight failed on {len({c.host for c in plan.problems})} host(s); nothing was changed",
                        context="checking the hosts before applying",
                        details=[f"{c.host}: {c.name}: {c.detail}" for c in plan.problems],
                        hint="fix what is listed, then run apply again")
        if plan.images is not None and not plan.images.ok:
            raise plan.images.error("checking every image reference before applying; nothing was changed")
        record_hosts(site)  # before the first change: remove-node can reach every host a run touched
        backup = None
        if plan.empty:
            opts.out("nothing to do: every host matches the desired state")
            outcome = Outcome(plan)
        else:  # a snapshot first when the plan changes etcd or a master and etcd runs
            backup = etcd_backup.before_changes(site.inv, site.pki, site.state.root, plan, opts.session,
                                                hosts.__getitem__, opts.out)
            outcome = Executor(site, hosts, opts).run(plan)
    finally:
        hosts.close()
    results = checks_mod.run_all(site.inv, site.pki, opts.session, opts.connector_for,
                                 opts.max_parallel) if opts.checks else None
    # after restarts the leases of controller-manager/scheduler take a few seconds to be taken again: a
    # check that fails is repeated for up to SETTLE_TRIES * SETTLE_PAUSE seconds (also after an empty plan)
    for _ in range(SETTLE_TRIES if results is not None else 0):
        if results.ok:
            break
        opts.sleep(SETTLE_PAUSE)
        results = checks_mod.run_all(site.inv, site.pki, opts.session, opts.connector_for, opts.max_parallel)
    if results is not None:  # seeded by now: every reference must be there with the bundle's digest
        results.results += images_results(site, opts.session)
    report = dict(evidence(site, plan, outcome, results, opts.clock() - t0), etcd_backup=backup)
    site.state.write_report(report, evidence_text(report))
    if results is not None and not results.ok:
        raise Error("the cluster checks failed after apply", context="verifying the cluster",
                    details=[r.line() for r in results.results if not r.ok],
                    hint=f"see {site.state.root}/report.txt; `installer check` repeats the checks")
    if results is not None:
        record_etcd_members(site)  # a cluster formed before the record existed: its healthy members
    return report


def record_hosts(site: Site) -> None:
    """Add the inventory's hosts to the record remove-node reads (only remove-node takes one out again)."""
    hosts = site.state.hosts()
    hosts.update({h.name: h.model_dump(mode="json", exclude_none=True) for h in site.inv.hosts})
    site.state.set_hosts(hosts)


def record_etcd_members(site: Site) -> None:
    """Record the inventory's etcd members as those the cluster was formed with, unless already recorded."""
    if site.inv.etcd_members and site.state.etcd_members() is None:
        site.state.set_etcd_members({m.name: m.address for m in site.inv.etcd_members})


def evidence(site: Site, plan: Plan, outcome: Outcome, results, seconds: float) -> dict:
    """What was verified, pushed, changed per host, and the check results."""
    changed: Dict[str, List[str]] = {}
    for e in outcome.executed:
        if e["kind"] in ("daemon-reload",):
            continue
        changed.setdefault(e["host"], []).append(f"{e['kind']} {e['target']}" + (
            f" ({e['detail']})" if e.get("detail") else ""))
    return {
        "bundle": {"name": site.bundle.name, "version": site.bundle.version,
                   "manifest_sha256": site.bundle.digest, "signer_fingerprint": site.bundle.fingerprint,
                   "verified": "signature and every member's sha256", "reused_unpacked": site.bundle.reused,
                   "dir": str(site.bundle.dir)},
        "pki": site.pki_report.lines() if site.pki_report else [],
        "trust": trust_summary(site.bundle.components),
        "seed": outcome.seed,
        "changed": changed,
        "nothing_to_do": plan.empty,
        "skipped": outcome.skipped,
        "deferred": list(plan.deferred),
        "checks": results.as_dict() if results is not None else None,
        "seconds": round(seconds, 2),
    }


def trust_summary(components: Mapping[str, str]) -> dict:
    """Where the bundle's artifacts were trusted from (as the bundler recorded it in the signed manifest)."""
    repos = {k[len("repo/"):]: v for k, v in components.items() if k.startswith("repo/")}
    trust = {k[len("trust/"):]: v for k, v in components.items() if k.startswith("trust/")}
    return {
        "repos": repos,
        "gpgcheck_off": sorted(r for r, v in repos.items() if v == "gpgcheck off"),
        "unchecked_rpms": sorted(k for k, v in trust.items() if k.startswith("rpm/") and "unchecked" in v),
        "first_seen_binaries": sorted(k for k, v in trust.items() if k.startswith("binary/") and v.endswith("first-seen")),
        "signed_rpms": sum(1 for k, v in trust.items() if k.startswith("rpm/") and v.startswith("signed by")),
    }


def evidence_text(r: dict) -> str:
    b = r["bundle"]
    lines = [f"bundle {b['name']} {b['version']}: manifest sha256 {b['manifest_sha256']}",
             f"  signed by {b['signer_fingerprint']}; verified {b['verified']}"
             + ("; unpacked copy reused" if b["reused_unpacked"] else "; unpacked")]
    t = r.get("trust") or {}
    if t.get("repos"):
        lines.append(f"  RPMs: {t['signed_rpms']} signature-checked at build time against pinned keys; "
                     "yum checks them again on every host (gpgcheck=1)")
        lines += [f"    repo {name}: {how}" for name, how in sorted(t["repos"].items())]
    if t.get("gpgcheck_off"):
        lines.append(f"  WARNING: repos with gpgcheck off in the spec: {', '.join(t['gpgcheck_off'])}; "
                     f"unchecked RPMs: {', '.join(t['unchecked_rpms']) or 'none'}")
    if t.get("first_seen_binaries"):
        lines.append(f"  binaries pinned when first seen (no upstream digest): {', '.join(t['first_seen_binaries'])}")
    issued = [ln for ln in r["pki"] if ": issued" in ln or "created" in ln]
    lines.append(f"pki: {len(issued)} issued/created" + (f" ({'; '.join(issued)})" if issued else ""))
    if r["seed"]:
        t = r["seed"]["totals"]
        lines.append(f"registry {r['seed']['registry']}/{r['seed']['project']}: {t['images']} images, "
                     f"{t['images_present']} already present, {t['blobs_pushed']} blobs pushed")
    if r["nothing_to_do"]:
        lines.append("nothing to do: every host matched the desired state")
    lines += etcd_backup.evidence_lines(r.get("etcd_backup"))  # taken before the changes below
    for host, items in sorted(r["changed"].items()):
        lines.append(f"{host}: {len(items)} change(s)")
        lines += [f"  {i}" for i in items]
    lines += [f"skipped: {s}" for s in r["skipped"]]
    lines += [f"deferred: {d}" for d in r["deferred"]]
    if r["checks"]:
        lines.append("checks:")
        lines += [f"  {c['status']:<5} {c['name']:<24} {c['target']}: {c['detail']}" for c in r["checks"]["results"]]
    lines.append(f"took {r['seconds']} s")
    return "\n".join(lines)


__all__ = ["Options", "ssh_connectors", "default_session", "prepare_bundle", "desired_state", "load_site",
           "make_plan", "plan_command", "apply_command", "Executor", "Hosts", "evidence", "evidence_text",
           ]
