"""Pure planning: (inventory, desired state per host, facts per host, control-side facts) -> ordered phases.

Nothing here touches a host or the network: `apply` gathers facts, calls `build`, prints or executes the
result. A step is planned only when desired and actual differ, so a converged cluster plans nothing.

Phases run in this order; within a phase, a *wave* runs its hosts in parallel (each host's steps in
order) and then its gates. Rolling phases have one wave per host, so a gate guards every host:

  preflight  checks only (OS, arch, clock, ports, disk, rpm); any failure stops apply before a change
  packages   the bundle's yum repo copied to each host that needs packages, then yum install
  os-prep    /etc/hosts, sysctl.d, modules-load.d, hostname, swap, SELinux, firewalld
  registry   install mode: on the registry host docker, docker-compose, the site-CA certificate, the unpacked
             Harbor offline installer, harbor.cfg and install.sh (only when one of them changed or Harbor does
             not answer), gate: /api/systeminfo over TLS; then the Harbor project and seeding the bundle's
             images (control host)
  etcd       all members at once when none runs (Type=notify waits for quorum), else rolling and
             quorum-safe: stopped or unhealthy members first, a healthy one only once all others are healthy
  flannel-network  the v2 key <prefix>/config (control host, etcd client cert)
  flannel    flanneld on every master and node in parallel (Type=notify: a start returns once the lease and
             /run/flannel/subnet.env exist), so the apiservers reach pod IPs through flannel.1
  masters    one at a time, gate: that apiserver's /healthz
  lb         haproxy + keepalived one at a time, gate: /healthz through the VIP
  nodes      docker, CNI, kubelet, kube-proxy in parallel, gate: nodes Ready
  addons     manifests on the first master, then `kubectl apply` there (also when an earlier run wrote them
             but did not apply them: they stay pending in the state dir until kubectl exits 0)

`installer.egress` lists every image the desired state names (Plan.images): plan and apply refuse any that is
not the site registry's or not in the bundle.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from installer import etcd_auth
from installer import secrets_rewrite as sr
from installer.facts import Facts
from installer.inventory import Host, Inventory
from installer.plan_model import (  # noqa: F401  (re-exported: callers read the model through this module)
    CONTROL,
    Check,
    ControlState,
    HarborDesired,
    HostDesired,
    HostState,
    Phase,
    Plan,
    Source,
    Step,
    Wave,
)
from installer.preflight import MAX_TIME_SKEW, MIN_DISK_KB, etcd_membership_problem, preflight  # noqa: F401
from installer.render import BIN_DIR, PATHS, UNIT_DIR, File

PHASES = ("preflight", "packages", "os-prep", "registry", "etcd", "etcd-auth", "flannel-network", "flannel", "masters",
          "lb", "nodes", "addons")
REPO_DIR = "/var/lib/k8s-offline/repo"
ADDONS_DIR = "/etc/kubernetes/addons"
ETCD_OTHERS_HEALTHY = "etcd-others-healthy"  # gate: the members in items answer /health
ADDONS_UNIT = "addons"  # pseudo unit in the pending set: manifests written (or about to be), `kubectl apply` due
KUBECTL_APPLY = f"{BIN_DIR}/kubectl --kubeconfig {PATHS['admin_kubeconfig']} apply -f {ADDONS_DIR}/"
SECRET_DIRS = ("/etc/kubernetes/pki/", "/etc/etcd/pki/")

# Units each role runs, in start order. flanneld runs wherever the pod network must reach: masters and nodes.
ROLE_UNITS = {
    "etcd": ("etcd",),
    "master": ("flanneld", "kube-apiserver", "kube-controller-manager", "kube-scheduler"),
    "lb": ("haproxy", "keepalived"),
    "node": ("flanneld", "docker", "kubelet", "kube-proxy"),
}
MASTER_UNITS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
UNIT_PHASE = {"etcd": "etcd", "kube-apiserver": "masters", "kube-controller-manager": "masters",
              "kube-scheduler": "masters", "haproxy": "lb", "keepalived": "lb", "flanneld": "flannel",
              "docker": "nodes", "kubelet": "nodes", "kube-proxy": "nodes"}
ROLE_PACKAGES = {
    "lb": ("haproxy", "keepalived", "ipvsadm"),
    "node": ("docker-ce", "docker-ce-cli", "containerd.io", "socat", "conntrack-tools", "ipset"),
}
K = "/etc/kubernetes"
# Which files a unit reads: a change to one of them restarts exactly these units.
OWNERS: Dict[str, Tuple[str, ...]] = {
    "etcd": ("/etc/etcd/etcd.conf", "/etc/etcd/pki/ca.crt", "/etc/etcd/pki/server.*", f"{UNIT_DIR}/etcd.service",
             f"{BIN_DIR}/etcd"),
    "kube-apiserver": (f"{K}/config", f"{K}/apiserver", f"{K}/audit-policy.yaml", f"{K}/admission-control.yaml",
                       f"{K}/eventratelimit.yaml", f"{K}/pki/ca.crt", f"{K}/pki/etcd-ca.crt",
                       f"{K}/pki/apiserver*", f"{K}/pki/sa.*", f"{UNIT_DIR}/kube-apiserver.service",
                       f"{BIN_DIR}/kube-apiserver"),
    "kube-controller-manager": (f"{K}/config", f"{K}/controller-manager", f"{K}/controller-manager.kubeconfig",
                                f"{K}/pki/ca.*", f"{K}/pki/sa.key", f"{UNIT_DIR}/kube-controller-manager.service",
                                f"{BIN_DIR}/kube-controller-manager"),
    "kube-scheduler": (f"{K}/config", f"{K}/scheduler", f"{K}/scheduler.kubeconfig",
                       f"{UNIT_DIR}/kube-scheduler.service", f"{BIN_DIR}/kube-scheduler"),
    "haproxy": ("/etc/haproxy/*", f"{UNIT_DIR}/haproxy.service"),
    "keepalived": ("/etc/keepalived/*", f"{UNIT_DIR}/keepalived.service"),
    "flanneld": ("/etc/sysconfig/flanneld", f"{K}/pki/etcd-ca.crt", f"{K}/pki/flanneld-etcd-client*",
                 f"{UNIT_DIR}/flanneld.service", f"{BIN_DIR}/flanneld"),
    "docker": ("/etc/docker/daemon.json", f"{UNIT_DIR}/docker.service.d/*"),
    "kubelet": (f"{K}/config", f"{K}/kubelet", f"{K}/kubelet.kubeconfig", f"{K}/pki/ca.crt", f"{K}/pki/kubelet.*",
                f"{UNIT_DIR}/kubelet.service", f"{BIN_DIR}/kubelet"),
    "kube-proxy": (f"{K}/config", f"{K}/proxy", f"{K}/kube-proxy.kubeconfig", f"{UNIT_DIR}/kube-proxy.service",
                   f"{BIN_DIR}/kube-proxy"),
}
OS_PREP_FILES = ("/etc/hosts", "/etc/sysctl.d/k8s.conf", "/etc/modules-load.d/k8s.conf")
SHARED_FILES = ("/etc/hosts",)  # files of other hosts that add-node may change (no restart follows)
MODULES = ("br_netfilter", "overlay")


def wanted_packages(host: Host) -> Tuple[str, ...]:
    """Packages a host gets from the bundle's repo, by its roles."""
    out: List[str] = []
    for role, pkgs in ROLE_PACKAGES.items():
        if host.has(role):
            out += [p for p in pkgs if p not in out]
    return tuple(out)


def wanted_units(host: Host) -> Tuple[str, ...]:
    """Units a host runs, in phase and start order."""
    out: List[str] = []
    for role in ("etcd", "master", "lb", "node"):
        if host.has(role):
            out += [u for u in ROLE_UNITS[role] if u not in out]
    return tuple(out)


def owners(path: str, units: Iterable[str]) -> Tuple[str, ...]:
    """The units (of those given) that read path."""
    return tuple(u for u in units if any(fnmatch.fnmatchcase(path, p) for p in OWNERS.get(u, ())))


def phase_of(path: str, host: Host) -> str:
    """The phase that writes a file: the earliest phase of a unit that reads it, else by location."""
    # the repo, its file and the keys yum checks packages against must all be there before any install
    if path.startswith((REPO_DIR + "/", "/etc/yum.repos.d/", "/etc/pki/rpm-gpg/")):
        return "packages"
    if not host.roles:
        return "registry"  # only the registry host (install mode) has no cluster role
    if path in OS_PREP_FILES:
        return "os-prep"
    if path.startswith(ADDONS_DIR + "/"):
        return "addons"
    units = owners(path, wanted_units(host))
    if units:
        return min((UNIT_PHASE[u] for u in units), key=PHASES.index)
    if path.startswith("/etc/etcd/"):
        return "etcd"
    if host.has("master") and (path.startswith(K + "/") or path == f"{BIN_DIR}/kubectl"):
        return "masters"
    if host.has("etcd") and path == f"{BIN_DIR}/etcdctl":
        return "etcd"
    return "nodes"


def is_secret(path: str, f: Optional[File] = None) -> bool:
    """Files whose content never appears in a plan: keys, certificates' dirs, kubeconfigs (0600)."""
    return path.endswith(".key") or path.startswith(SECRET_DIRS) or (f is not None and f.mode & 0o077 == 0)


# ------------------------------------------------------------------ diffs


def file_diff(path: str, old: Optional[bytes], new: File) -> str:
    """A unified diff of a text file; secrets and binary content only say that they changed."""
    if is_secret(path, new):
        return "changed (secret)"
    if old is None:
        return "changed (current content not read)"
    try:
        a, b = old.decode("utf-8"), new.content.decode("utf-8")
    except UnicodeDecodeError:
        return "changed (binary content)"
    return "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), f"{path} (host)",
                                        f"{path} (desired)", n=2))


# ------------------------------------------------------------------ the planner


def _yum(f: Facts) -> str:
    return "yum" if f.has("yum") else "dnf"


def _packages_step(host: str, d: HostDesired, st: HostState) -> Optional[Step]:
    """yum install of the host's packages that are not installed yet, from the bundle's repo only."""
    have = st.facts.packages or {}
    missing = tuple(p for p in d.packages if p not in have)
    if not missing:
        return None
    y = _yum(st.facts)
    opts = "-y --disablerepo='*' --enablerepo='k8s-offline*'"  # the bundle's repo(s): checked and unchecked
    return Step(host, "packages", "packages", f"not installed: {', '.join(missing)}", items=missing,
                command=f"{y} -q {opts} clean metadata >/dev/null 2>&1; {y} {opts} install " + " ".join(missing))


def _registry_host(h: Host, d: HostDesired, st: HostState, control: ControlState) -> Tuple[List[Step], List[Step]]:
    """Install mode: the registry host's steps in order, and the gate on Harbor's API when install.sh runs."""
    name, f, hd = h.name, st.facts, d.harbor
    steps, _ = _files_steps(name, d, st, "packages", h, set())
    pkgs = _packages_step(name, d, st)
    if pkgs:
        steps.append(pkgs)
    steps += _unit_steps(name, d.units, st, set(), set())  # Harbor's containers need a running docker
    marker = f.files.get(hd.marker)
    unpack = marker is None or marker.sha256 != hd.marker_sha256
    if unpack:
        steps.append(Step(name, "harbor-unpack", hd.install_dir, "not unpacked yet" if marker is None else
                          "the bundle's installer differs from the unpacked one", source=hd.installer))
    steps += _files_steps(name, d, st, "registry", h, set())[0]
    changed = [p for p in hd.reinstall_on if p in d.files and
               (f.files.get(p) is None or f.files[p].sha256 != _sha(d.files[p].content))]
    why = (["installer unpacked"] if unpack else []) + [f"{p} changed" for p in changed]
    if not why and not control.harbor_up:
        why.append(f"Harbor does not answer ({control.harbor_detail or 'not checked'})")
    if not why:
        return steps, []
    steps.append(Step(name, "harbor-install", hd.install_dir, "; ".join(why), command=hd.install_command))
    gate = Step(CONTROL, "gate", "harbor-api", f"Harbor answers https://{hd.endpoint}/api/systeminfo (site CA)",
                items=(name,))
    return steps, [gate]


def _files_steps(host: str, d: HostDesired, st: HostState, phase: str, h: Host,
                 pending: Set[str]) -> Tuple[List[Step], Set[str]]:
    """put/binary/repo steps of one phase on one host, and the units that must restart because of them."""
    f = st.facts
    steps: List[Step] = []
    restart: Set[str] = set()
    for path, want in sorted(d.files.items()):
        if phase_of(path, h) != phase:
            continue
        have = f.files.get(path)
        units = owners(path, d.units)
        if have is None:
            reason, diff = "new file", None
        elif have.sha256 != _sha(want.content):
            reason, diff = "content differs", file_diff(path, st.contents.get(path), want)
        elif have.mode != want.mode or have.owner != want.owner:
            reason, diff = f"mode/owner {have.mode:04o} {have.owner} -> {want.mode:04o} {want.owner}", None
            units = ()  # metadata only: no daemon rereads it
        else:
            continue
        steps.append(Step(host, "put", path, reason + (f"; restarts {', '.join(units)}" if units else ""),
                          diff=diff, file=want, units=units))
        restart.update(units)
    for path, src in sorted(d.binaries.items()):
        if phase_of(path, h) != phase:
            continue
        have = f.files.get(path)
        if have is not None and have.sha256 == src.sha256 and have.mode == src.mode:
            continue
        units = owners(path, d.units)
        reason = "new binary" if have is None else "differs from the bundle"
        steps.append(Step(host, "binary", path, reason + (f"; restarts {', '.join(units)}" if units else ""),
                          source=src, units=units))
        restart.update(units)
    if phase == "packages" and d.repo:
        missing = tuple(p for p, s in sorted(d.repo.items())
                        if f.files.get(p) is None or f.files[p].sha256 != s.sha256)
        if missing:
            steps.append(Step(host, "repo", REPO_DIR, f"{len(missing)} of {len(d.repo)} repository files to copy "
                              f"(baseurl=file://{REPO_DIR})", items=missing))
    return steps, restart


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _etcd_rolling(active: Sequence[Host], per_host: Mapping[str, List[Step]], states: Mapping[str, HostState],
                  control: ControlState, inv: Inventory, gate: Step) -> Tuple[Wave, ...]:
    """Quorum-safe rolling waves: members that do not run or are unhealthy first (starting them can only
    restore quorum), then the healthy ones, each after a gate that every *other* member is healthy, so a
    healthy member is never restarted while another one is down."""
    unhealthy = set(control.etcd_unhealthy or ())

    def down(h: Host) -> bool:
        us = (states[h.name].facts.units or {}).get("etcd")
        return us is None or not us.running

    order = ([h for h in active if down(h)] + [h for h in active if not down(h) and h.name in unhealthy]
             + [h for h in active if not down(h) and h.name not in unhealthy])
    waves: List[Wave] = []
    for h in order:
        if not down(h) and h.name not in unhealthy:
            others = tuple(m.name for m in inv.etcd_members if m.name != h.name)
            waves.append(Wave((Step(CONTROL, "gate", ETCD_OTHERS_HEALTHY, f"every etcd member but {h.name} "
                                    f"answers /health before {h.name} restarts (quorum kept)", items=others,
                                    units=("etcd",)),)))
        waves.append(Wave(tuple(per_host[h.name]), (gate,)))
    return tuple(waves)


def _unit_steps(host: str, units: Sequence[str], st: HostState, restart: Set[str],
                pending: Set[str], unit_files_changed: bool = False) -> List[Step]:
    """daemon-reload, enable and restart steps for the given units of one host."""
    states = st.facts.units or {}
    steps: List[Step] = []
    todo = []
    for u in units:
        us = states.get(u)
        if u in restart:
            todo.append((u, "files changed"))
        elif u in pending:
            todo.append((u, "files changed in an earlier, unfinished apply"))
        elif us is None or not us.running:
            todo.append((u, f"not running ({us.active if us else 'unknown'})"))
    enable = [u for u in units if not (states.get(u) and states[u].enabled)]
    if enable or unit_files_changed or any(u in pending for u, _ in todo):
        steps.append(Step(host, "daemon-reload", "daemon-reload", "unit files changed"))
    for u in enable:
        steps.append(Step(host, "enable", u, "start at boot"))
    for u, why in todo:
        steps.append(Step(host, "restart", u, why, command=f"systemctl restart {u}"))
    return steps


def _os_prep(host: str, h: Host, inv: Inventory, d: HostDesired, st: HostState) -> List[Step]:
    f = st.facts
    c = inv.cluster
    steps, _ = _files_steps(host, d, st, "os-prep", h, set())
    changed = {s.target for s in steps}
    ctr = f.container
    if f.hostname and f.hostname != h.name:
        steps.append(Step(host, "command", "hostname", f"hostname is {f.hostname!r}, the inventory says {h.name!r}",
                          command=f"hostnamectl set-hostname {h.name}"))
    if "/etc/sysctl.d/k8s.conf" in changed:
        steps.append(Step(host, "restart", "systemd-sysctl", "sysctl settings changed",
                          command="systemctl restart systemd-sysctl"))
        if ctr:
            steps.append(Step(host, "skip", "sysctl", f"container host ({ctr}): only net.* keys apply; vm.* and "
                              "other global keys are the machine's"))
    if "/etc/modules-load.d/k8s.conf" in changed or not {"bridge-nf", "overlay"} <= f.kernel_features:
        if ctr:
            if "/etc/modules-load.d/k8s.conf" in changed:
                steps.append(Step(host, "skip", "modprobe", f"container host ({ctr}): kernel modules are the "
                                  f"machine's (bridge-nf: {'yes' if 'bridge-nf' in f.kernel_features else 'no'}, "
                                  f"overlay: {'yes' if 'overlay' in f.kernel_features else 'no'})"))
        else:
            mods = list(MODULES) + (["ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack_ipv4"]
                                    if h.has("lb") else [])
            steps.append(Step(host, "command", "modprobe", "load the modules Kubernetes needs now (also at boot "
                              "via modules-load.d)", command=" && ".join(f"modprobe {m}" for m in mods)))
    if f.swap_on:
        steps.append(Step(host, "command", "swapoff", f"swap is on ({', '.join(f.swaps)}); the kubelet refuses swap",
                          command="swapoff -a && sed -ri '/^[^#].*\\sswap\\s/s/^/#/' /etc/fstab"))
    if c.selinux != "keep" and f.selinux == "Enforcing":
        if ctr:
            steps.append(Step(host, "skip", "selinux", f"container host ({ctr}): SELinux is the machine's"))
        else:
            mode = "permissive" if c.selinux == "permissive" else "disabled"
            steps.append(Step(host, "command", "selinux", f"SELinux is enforcing; cluster.selinux={c.selinux}",
                              command=f"setenforce 0 && sed -ri 's/^SELINUX=.*/SELINUX={mode}/' /etc/selinux/config"))
    fw = (f.units or {}).get("firewalld")
    if c.firewalld == "disable" and fw is not None and (fw.running or fw.file == "enabled"):
        steps.append(Step(host, "command", "firewalld", "firewalld would block cluster traffic "
                          "(cluster.firewalld=disable)", command="systemctl disable --now firewalld"))
    return steps


def build(
    inv: Inventory,
    desired: Mapping[str, HostDesired],
    states: Mapping[str, HostState],
    control: ControlState = ControlState(),
    pending: Optional[Mapping[str, Set[str]]] = None,
    focus: Optional[Iterable[str]] = None,
    registry_host: Optional[Host] = None,
) -> Plan:
    """The whole plan. `pending`: units left to restart by an unfinished run; `focus`: add-node's hosts
    (other hosts then only get SHARED_FILES, nothing restarts there, and their other changes are deferred);
    `registry_host`: install mode's Harbor host (its desired state and facts under its name)."""
    pending = {h: set(u) for h, u in (pending or {}).items()}
    focus_set = set(focus) if focus is not None else None
    hosts = [h for h in inv.hosts if h.name in desired and h.name in states]
    reg = registry_host if registry_host is not None and registry_host.name in desired \
        and registry_host.name in states and desired[registry_host.name].harbor is not None else None
    checked = hosts + ([reg] if reg is not None else [])
    checks = preflight(inv, {h.name: desired[h.name] for h in checked}, states)
    phases: List[Phase] = []
    deferred: List[str] = []

    def in_focus(h: Host) -> bool:
        return focus_set is None or h.name in focus_set

    def host_phase(h: Host, phase: str) -> List[Step]:
        d, st = desired[h.name], states[h.name]
        pend = pending.get(h.name, set())
        steps, restart = _files_steps(h.name, d, st, phase, h, pend)
        units = [u for u in d.units if UNIT_PHASE.get(u) == phase]
        unit_files = any(s.kind == "put" and s.target.startswith(UNIT_DIR + "/") for s in steps)
        steps += _unit_steps(h.name, units, st, restart, pend, unit_files)
        return steps

    # packages
    waves = []
    for h in hosts:
        if not in_focus(h):
            continue
        d, st = desired[h.name], states[h.name]
        steps, _ = _files_steps(h.name, d, st, "packages", h, set())
        pkgs = _packages_step(h.name, d, st)
        if pkgs:
            steps.append(pkgs)
        if steps:
            waves.append(steps)
    phases.append(Phase("packages", (Wave(tuple(s for w in waves for s in w)),) if waves else ()))

    # os-prep (add-node: other hosts only get the shared files)
    steps = []
    for h in hosts:
        st_h = _os_prep(h.name, h, inv, desired[h.name], states[h.name])
        if in_focus(h):
            steps += st_h
        else:
            keep = [s for s in st_h if s.kind == "put" and s.target in SHARED_FILES]
            steps += keep
            deferred += [f"{h.name}: {s.line()}" for s in st_h if s not in keep and s.acts]
    phases.append(Phase("os-prep", (Wave(tuple(steps)),) if steps else ()))

    # registry: install mode's Harbor host first (its own wave and gate), then project and seed from here
    reg_waves: List[Wave] = []
    if reg is not None:
        r_steps, r_gates = _registry_host(reg, desired[reg.name], states[reg.name], control)
        if focus_set is not None:
            deferred += [f"{reg.name}: {s.line()}" for s in r_steps if s.acts]
        elif r_steps:
            reg_waves.append(Wave(tuple(r_steps), tuple(r_gates)))
    steps = []
    if control.registry_skip:
        if control.images_missing is None or control.images_missing:
            steps.append(Step(CONTROL, "skip", "registry", control.registry_skip))
    elif control.images_missing is None:
        steps.append(Step(CONTROL, "harbor-project", inv.registry.project, "create the project when the registry "
                          "is Harbor (a plain registry has none)"))
        steps.append(Step(CONTROL, "seed", inv.registry.endpoint, "registry not checked yet: push what is missing"))
    elif control.images_missing:
        steps.append(Step(CONTROL, "harbor-project", inv.registry.project, "create the project when the registry "
                          "is Harbor (a plain registry has none)"))
        steps.append(Step(CONTROL, "seed", inv.registry.endpoint,
                          f"{len(control.images_missing)} of {control.images_total} images missing",
                          items=tuple(control.images_missing)))
    phases.append(Phase("registry", tuple(reg_waves) + ((Wave(tuple(steps)),) if steps else ())))

    # etcd: all members at once when none runs (Type=notify: each start waits for quorum), else rolling
    members = [h for h in hosts if h.has("etcd") and in_focus(h)]
    per_host = {h.name: host_phase(h, "etcd") for h in members}
    active = [h for h in members if per_host.get(h.name)]
    any_running = any((states[h.name].facts.units or {}).get("etcd") and
                      states[h.name].facts.units["etcd"].running for h in hosts if h.has("etcd"))
    restarting = [h for h in active if any(s.kind == "restart" for s in per_host[h.name])]
    gate = Step(CONTROL, "gate", "etcd-health", "every member answers /health over TLS",
                items=tuple(m.name for m in inv.etcd_members), units=("etcd",))
    if active and any_running and restarting:
        phases.append(Phase("etcd", _etcd_rolling(active, per_host, states, control, inv, gate), rolling=True))
    elif active:
        waves_e = (Wave(tuple(s for h in active for s in per_host[h.name]), (gate,) if restarting else ()),)
        phases.append(Phase("etcd", waves_e))
    else:
        phases.append(Phase("etcd"))

    phases.append(etcd_auth.phase(inv, {n: st.facts for n, st in states.items()}, in_focus))

    # flannel network key
    want = None
    if inv.nodes or inv.masters:  # flanneld runs on both
        from installer.render import flannel_network_config

        want = flannel_network_config(inv)
    if want is not None and control.flannel_config != want:
        reason = "missing" if control.flannel_config is None else f"differs: {control.flannel_config}"
        phases.append(Phase("flannel-network", (Wave((Step(CONTROL, "flannel-key", f"{inv.cluster.flannel_prefix}/config",
                                                           f"{reason} -> {want}", command=want),)),)))
    else:
        phases.append(Phase("flannel-network"))

    # flanneld on every master and node at once (its start blocks until the lease and subnet file exist)
    steps = []
    for h in hosts:
        if "flanneld" not in desired[h.name].units:
            continue
        s_h = host_phase(h, "flannel")
        if not in_focus(h):
            deferred += [f"{h.name}: {s.line()}" for s in s_h if s.acts]
            continue
        steps += s_h
    phases.append(Phase("flannel", (Wave(tuple(steps)),) if steps else ()))

    # masters, then lb: one host at a time, each with its gate
    for phase, gate_for in (("masters", lambda h: Step(h.name, "gate", "apiserver-healthz",
                                                       f"https://{h.address}:{inv.cluster.apiserver_port}/healthz",
                                                       units=MASTER_UNITS)),
                            ("lb", lambda h: Step(CONTROL, "gate", "vip-healthz",
                                                  f"https://{inv.cluster.vip}:{inv.cluster.lb_port}/healthz "
                                                  f"(after {h.name})", units=ROLE_UNITS["lb"], items=(h.name,)))):
        role = "master" if phase == "masters" else "lb"
        waves_m = []
        for h in hosts:
            if not h.has(role):
                continue
            steps = host_phase(h, phase)
            if not in_focus(h):
                deferred += [f"{h.name}: {s.line()}" for s in steps if s.acts]
                continue
            if steps:
                restarts = any(s.kind == "restart" for s in steps)
                waves_m.append(Wave(tuple(steps), (gate_for(h),) if restarts else ()))
        phases.append(Phase(phase, tuple(waves_m), rolling=True))

    # nodes: in parallel, then every changed node must be Ready
    steps = []
    changed_nodes = []
    for h in hosts:
        if not h.has("node"):
            continue
        s_h = host_phase(h, "nodes")
        if not in_focus(h):
            deferred += [f"{h.name}: {s.line()}" for s in s_h if s.acts]
            continue
        steps += s_h
        if any(s.kind == "restart" for s in s_h):
            changed_nodes.append(h.name)
    gates = (Step(CONTROL, "gate", "node-ready", "registered and Ready: " + ", ".join(changed_nodes),
                  items=tuple(changed_nodes), units=("kubelet", "docker")),) if changed_nodes else ()
    phases.append(Phase("nodes", (Wave(tuple(steps), gates),) if steps else ()))

    # addons on the first master
    steps = []
    masters = [h for h in hosts if h.has("master")]
    if masters and in_focus(masters[0]):
        m = masters[0]
        puts, _ = _files_steps(m.name, desired[m.name], states[m.name], "addons", m, set())
        steps += puts
        if puts or ADDONS_UNIT in pending.get(m.name, set()):
            why = "manifests changed" if puts else "manifests written by an earlier run, not applied yet"
            steps.append(Step(m.name, "kubectl-apply", ADDONS_DIR, why, command=KUBECTL_APPLY))
    # secrets stored before the encryption config: re-written once every master runs with it
    enc = PATHS["encryption_config"]
    writes_enc = [h.name for h in masters if in_focus(h) and any(
        s.kind == "put" and s.target == enc for p in phases for w in p.waves for s in w.steps if s.host == h.name)]
    if writes_enc or sr.SECRETS_UNIT in pending.get(CONTROL, set()):
        why = (f"the encryption config is new or changed on {', '.join(writes_enc)}" if writes_enc
               else "an earlier run wrote the encryption config and did not re-write the secrets yet")
        steps.append(Step(CONTROL, sr.STEP_KIND, "secrets", why))
    phases.append(Phase("addons", (Wave(tuple(steps)),) if steps else ()))
    return Plan(tuple(checks), tuple(phases), tuple(deferred))


__all__ = ["CONTROL", "PHASES", "REPO_DIR", "ADDONS_DIR", "Source", "HarborDesired", "HostDesired", "HostState", "ControlState",
           "Step", "Wave", "Phase", "Check", "Plan", "build", "preflight", "file_diff", "is_secret", "owners",
           "phase_of", "wanted_packages", "wanted_units"]
