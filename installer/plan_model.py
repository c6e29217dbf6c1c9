"""What planning reads and writes: desired state, facts, control-side facts (inputs) and the plan itself
(steps, waves, phases, preflight checks). Pure data; installer/plan.py builds it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Tuple

from contract.errors import Error
from installer.facts import Facts
from installer.render import File

if TYPE_CHECKING:  # egress imports this module; the field below only needs its type
    from installer.egress import Report as ImagesReport

CONTROL = "control"  # the host name of steps run from the control host itself


class Name(str, Enum):
    """An enum whose members are their text: plan text, JSON and the journal read exactly as the strings did."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class StepKind(Name):
    """What a step does; the executor has one handler per kind."""

    PUT = "put"  # a rendered file
    BINARY = "binary"  # an executable from the bundle
    REPO = "repo"  # the bundle's yum repository files
    PACKAGES = "packages"
    COMMAND = "command"
    DAEMON_RELOAD = "daemon-reload"
    ENABLE = "enable"
    RESTART = "restart"
    GATE = "gate"  # wait for a health condition (target: a Gate)
    SEED = "seed"
    HARBOR_PROJECT = "harbor-project"
    HARBOR_UNPACK = "harbor-unpack"
    HARBOR_INSTALL = "harbor-install"
    FLANNEL_KEY = "flannel-key"
    ETCD_AUTH = "etcd-auth"  # turn on etcd v3 authentication (installer.etcd_auth)
    ETCD_JOIN = "etcd-join"  # a member whose data is gone rejoins the running cluster (installer.etcd_member)
    ETCD_MEMBER_ADD = "etcd-member-add"  # etcdctl member add on a running member (installer.etcd_membership)
    ETCD_MEMBER_REMOVE = "etcd-member-remove"  # etcdctl member remove on a member that stays
    ETCD_MEMBER_RETIRE = "etcd-member-retire"  # the removed member's host: etcd stopped, its data moved aside
    ETCD_MEMBERS_RECORD = "etcd-members-record"  # the recorded membership follows a change
    DRAIN = "drain"  # cordon a node and evict its pods before its kubelet is replaced (installer.drain)
    UNCORDON = "uncordon"  # make it schedulable again once Ready
    KUBECTL_APPLY = "kubectl-apply"
    REWRITE_SECRETS = "rewrite-secrets"  # secrets stored before the encryption config, re-written
    SKIP = "skip"  # a line saying what is not done, and why


class Gate(Name):
    """The health conditions a wave may wait for (a gate step's target); each has one probe (installer.gates)."""

    HARBOR_API = "harbor-api"
    ETCD_HEALTH = "etcd-health"  # every member in items answers /health
    ETCD_OTHERS_HEALTHY = "etcd-others-healthy"  # the members in items answer /health (one is about to restart)
    ETCD_MEMBERS_HEALTHY = "etcd-members-healthy"  # the members in items answer /health (the membership changes)
    APISERVER_HEALTHZ = "apiserver-healthz"
    VIP_HEALTHZ = "vip-healthz"
    NODE_READY = "node-ready"


LABELS = {StepKind.PUT: "file", StepKind.BINARY: "binary", StepKind.REPO: "repo", StepKind.PACKAGES: "install",
          StepKind.COMMAND: "run", StepKind.DAEMON_RELOAD: "systemctl", StepKind.ENABLE: "enable",
          StepKind.RESTART: "restart", StepKind.GATE: "wait for", StepKind.SEED: "seed",
          StepKind.HARBOR_PROJECT: "harbor", StepKind.HARBOR_UNPACK: "unpack", StepKind.HARBOR_INSTALL: "run",
          StepKind.FLANNEL_KEY: "etcd v2 key", StepKind.ETCD_AUTH: "etcd", StepKind.ETCD_JOIN: "rejoin",
          StepKind.ETCD_MEMBER_ADD: "etcd member add", StepKind.ETCD_MEMBER_REMOVE: "etcd member remove",
          StepKind.ETCD_MEMBER_RETIRE: "retire", StepKind.ETCD_MEMBERS_RECORD: "record", StepKind.DRAIN: "drain", StepKind.UNCORDON: "uncordon", StepKind.KUBECTL_APPLY: "kubectl apply",
          StepKind.REWRITE_SECRETS: "rewrite-secrets", StepKind.SKIP: "skip"}  # how a plan line starts


# ------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class Source:
    """Where a non-rendered file comes from (bundle tarball member or repo file) and its sha256."""

    sha256: str
    origin: str  # e.g. "kubernetes-server-linux-amd64.tar.gz!kubernetes/server/bin/kubelet" or "rpms/Packages/x.rpm"
    mode: int = 0o755


@dataclass(frozen=True)
class HarborDesired:
    """Install mode: the offline installer unpacked on the registry host, and what makes install.sh run again."""

    installer: Source  # the bundle's harbor-offline-installer tarball
    install_dir: str  # where it is unpacked (/opt/harbor)
    marker: str  # file written after a complete unpack: "<sha256>  <tarball name>"
    marker_sha256: str  # sha256 of the marker content for this installer
    reinstall_on: Tuple[str, ...]  # files whose content change re-runs install.sh (harbor.cfg, cert, key)
    install_command: str
    endpoint: str  # what the gate polls, for the plan text


@dataclass(frozen=True)
class HostDesired:
    """What one host should look like."""

    files: Mapping[str, File]
    binaries: Mapping[str, Source] = field(default_factory=dict)
    repo: Mapping[str, Source] = field(default_factory=dict)  # REPO_DIR/... -> source (hosts with packages)
    packages: Tuple[str, ...] = ()
    units: Tuple[str, ...] = ()
    harbor: Optional[HarborDesired] = None  # the registry host in install mode

    def managed_paths(self) -> List[str]:
        probed = {self.harbor.marker} if self.harbor else set()
        return sorted(set(self.files) | set(self.binaries) | set(self.repo) | probed)


@dataclass(frozen=True)
class HostState:
    """One host now: its facts, and the current bytes of changed non-secret text files (for diffs)."""

    facts: Facts
    contents: Mapping[str, Optional[bytes]] = field(default_factory=dict)


@dataclass(frozen=True)
class ControlState:
    """Facts read from the control host: registry and etcd, as far as they could be read."""

    images_missing: Optional[Tuple[str, ...]] = None  # None: not known (registry not reachable)
    images_total: int = 0
    registry_skip: Optional[str] = None  # why the registry phase does nothing
    harbor_up: Optional[bool] = None  # install mode: /api/systeminfo answered over TLS (None: not probed)
    harbor_detail: str = ""
    flannel_config: Optional[str] = None  # the current v2 value; None: missing or etcd not reachable
    etcd_unhealthy: Optional[Tuple[str, ...]] = None  # members whose /health failed; None: not probed
    etcd_recorded: bool = False  # the cluster was formed (etcd-members.json exists): members join, not form
    etcd_members: Tuple[Tuple[str, str], ...] = ()  # that record: (name, address) of each member
    etcd_peers: Optional[Tuple[str, ...]] = None  # peer URLs in the running cluster's member list; None: not read
    cordoned: Tuple[str, ...] = ()  # nodes an earlier run cordoned for their upgrade and did not uncordon


# ------------------------------------------------------------------ outputs


@dataclass(frozen=True)
class Step:
    """One thing to do on one host (or on the control host), and why."""

    host: str
    kind: StepKind
    target: str  # path, unit, Gate, ...
    reason: str
    diff: Optional[str] = None
    command: Optional[str] = None
    file: Optional[File] = field(default=None, repr=False, compare=False)
    source: Optional[Source] = None
    items: Tuple[str, ...] = ()  # repo: paths to copy; packages: names; gate: hosts it waits for
    units: Tuple[str, ...] = ()  # put/binary: units to restart afterwards; gate: units whose journal helps
    tolerate: bool = False  # command: a failure is reported as a warning, not fatal

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", StepKind(self.kind))
            if self.kind is StepKind.GATE:
                object.__setattr__(self, "target", Gate(self.target))
        except ValueError:
            raise Error(f"unknown step kind or gate: {self.kind} {self.target}", hint="this is a bug: report it") from None

    @property
    def acts(self) -> bool:
        """Whether the step changes something (gates and skip lines do not)."""
        return self.kind not in (StepKind.GATE, StepKind.SKIP)

    def to_dict(self) -> dict:
        d = {"host": self.host, "kind": str(self.kind), "target": str(self.target), "reason": self.reason}
        if self.diff is not None:
            d["diff"] = self.diff
        if self.command:
            d["command"] = self.command
        if self.items:
            d["items"] = list(self.items)
        if self.units:
            d["units"] = list(self.units)
        if self.source is not None:
            d["source"] = self.source.origin
            d["sha256"] = self.source.sha256
        return d

    def line(self) -> str:
        """One line for people."""
        target = " ".join(self.items) if self.kind is StepKind.PACKAGES else self.target
        return f"{LABELS[self.kind]} {target}: {self.reason}"


@dataclass(frozen=True)
class Wave:
    """Steps run in parallel across hosts (each host's steps in order), then the gates."""

    steps: Tuple[Step, ...]
    gates: Tuple[Step, ...] = ()

    @property
    def hosts(self) -> List[str]:
        seen: List[str] = []
        for s in self.steps:
            if s.host not in seen:
                seen.append(s.host)
        return seen


@dataclass(frozen=True)
class Phase:
    """A named phase: its waves and informational lines (e.g. what a container host cannot do)."""

    name: str
    waves: Tuple[Wave, ...] = ()
    rolling: bool = False

    @property
    def steps(self) -> List[Step]:
        return [s for w in self.waves for s in (*w.steps, *w.gates)]

    @property
    def acts(self) -> bool:
        return any(s.acts for s in self.steps)


@dataclass(frozen=True)
class Check:
    """One preflight check on one host."""

    host: str
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Plan:
    """Preflight results and the ordered phases."""

    checks: Tuple[Check, ...]
    phases: Tuple[Phase, ...]
    deferred: Tuple[str, ...] = ()  # changes left out on purpose (add-node leaves other hosts alone)
    images: Optional["ImagesReport"] = None  # every image reference of the desired state (installer.egress)

    @property
    def problems(self) -> List[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def empty(self) -> bool:
        return not any(p.acts for p in self.phases)

    @property
    def steps(self) -> List[Step]:
        return [s for p in self.phases for s in p.steps]

    def by_host(self) -> Dict[str, List[Step]]:
        out: Dict[str, List[Step]] = {}
        for s in self.steps:
            out.setdefault(s.host, []).append(s)
        return out

    def summary(self) -> Dict[str, Dict[str, list]]:
        """Per host: files changed, binaries, packages installed, units (re)started."""
        out: Dict[str, Dict[str, list]] = {}
        for s in self.steps:
            if not s.acts:
                continue
            h = out.setdefault(s.host, {"files": [], "binaries": [], "packages": [], "restarts": [], "other": []})
            if s.kind is StepKind.PUT:
                h["files"].append(s.target)
            elif s.kind is StepKind.BINARY:
                h["binaries"].append(s.target)
            elif s.kind is StepKind.PACKAGES:
                h["packages"] += list(s.items)
            elif s.kind is StepKind.RESTART:
                h["restarts"].append(s.target)
            elif s.kind not in (StepKind.DAEMON_RELOAD, StepKind.ENABLE):
                h["other"].append(f"{s.kind} {s.target}")
        return out

    def to_dict(self) -> dict:
        return {
            "empty": self.empty,
            "checks": [c.__dict__ for c in self.checks],
            "problems": [f"{c.host}: {c.name}: {c.detail}" for c in self.problems],
            "phases": [{"name": p.name, "rolling": p.rolling,
                        "waves": [{"steps": [s.to_dict() for s in w.steps],
                                   "gates": [g.to_dict() for g in w.gates]} for w in p.waves]}
                       for p in self.phases if p.waves],
            "summary": self.summary(),
            "deferred": list(self.deferred),
            **({"images": self.images.to_dict()} if self.images is not None else {}),
        }

    def text(self, diffs: bool = True) -> str:
        """The plan for people: problems, then per phase and host what changes and why."""
        lines: List[str] = []
        for c in self.problems:
            lines.append(f"PREFLIGHT FAILED {c.host}: {c.name}: {c.detail}")
        if self.empty:
            lines.append("nothing to do: every host matches the desired state")
        for p in self.phases:
            if not p.waves:
                continue
            lines.append(f"== {p.name}" + (" (rolling: one host at a time)" if p.rolling else ""))
            for w in p.waves:
                for s in (*w.steps, *w.gates):
                    lines.append(f"  {s.host:<14} {s.line()}")
                    if diffs and s.diff:
                        lines += ["      " + d for d in s.diff.rstrip("\n").splitlines()]
        for d in self.deferred:
            lines.append(f"deferred: {d}")
        summary = self.summary()
        if summary:
            lines.append("== per host")
        for host, s in sorted(summary.items()):
            parts = [f"{len(s['files'])} file(s)"] if s["files"] else []
            parts += [f"{len(s['binaries'])} binary(ies)"] if s["binaries"] else []
            parts += [f"install {', '.join(s['packages'])}"] if s["packages"] else []
            parts += [f"(re)start {', '.join(dict.fromkeys(s['restarts']))}"] if s["restarts"] else []
            parts += s["other"]
            lines.append(f"  {host:<14} " + "; ".join(parts))
        if self.images is not None:
            lines.append(self.images.text())
        return "\n".join(lines)
