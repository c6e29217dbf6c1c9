"""The steps of one host in one phase, from its desired state and facts: files, binaries and the repo copied,
packages installed, units reloaded, enabled and restarted, the OS prepared, Harbor unpacked and installed."""

from __future__ import annotations

import difflib
import hashlib
from typing import List, Optional, Sequence, Set, Tuple

from installer import components
from installer.facts import Facts
from installer.inventory import Host, Inventory
from installer.plan_model import CONTROL, ControlState, Gate, HostDesired, HostState, Step, StepKind
from installer.plan_rules import MODULES, REPO_DIR, is_secret, owners, phase_of
from installer.render import File


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


def _yum(f: Facts) -> str:
    return "yum" if f.has("yum") else "dnf"


def packages_step(host: str, d: HostDesired, st: HostState) -> Optional[Step]:
    """yum install of the host's packages that are not installed yet, from the bundle's repo only."""
    have = st.facts.packages or {}
    missing = tuple(p for p in d.packages if p not in have)
    if not missing:
        return None
    y = _yum(st.facts)
    opts = "-y --disablerepo='*' --enablerepo='k8s-offline*'"  # the bundle's repo(s): checked and unchecked
    return Step(host, StepKind.PACKAGES, "packages", f"not installed: {', '.join(missing)}", items=missing,
                command=f"{y} -q {opts} clean metadata >/dev/null 2>&1; {y} {opts} install " + " ".join(missing))


def registry_host_steps(h: Host, d: HostDesired, st: HostState, control: ControlState) -> Tuple[List[Step], List[Step]]:
    """Install mode: the registry host's steps in order, and the gate on Harbor's API when install.sh runs."""
    name, f, hd = h.name, st.facts, d.harbor
    steps, _ = files_steps(name, d, st, "packages", h, set())
    pkgs = packages_step(name, d, st)
    if pkgs:
        steps.append(pkgs)
    steps += unit_steps(name, d.units, st, set(), set())  # Harbor's containers need a running docker
    marker = f.files.get(hd.marker)
    unpack = marker is None or marker.sha256 != hd.marker_sha256
    if unpack:
        steps.append(Step(name, StepKind.HARBOR_UNPACK, hd.install_dir, "not unpacked yet" if marker is None else
                          "the bundle's installer differs from the unpacked one", source=hd.installer))
    steps += files_steps(name, d, st, "registry", h, set())[0]
    changed = [p for p in hd.reinstall_on if p in d.files and
               (f.files.get(p) is None or f.files[p].sha256 != _sha(d.files[p].content))]
    why = (["installer unpacked"] if unpack else []) + [f"{p} changed" for p in changed]
    if not why and not control.harbor_up:
        why.append(f"Harbor does not answer ({control.harbor_detail or 'not checked'})")
    if not why:
        return steps, []
    steps.append(Step(name, StepKind.HARBOR_INSTALL, hd.install_dir, "; ".join(why), command=hd.install_command))
    gate = Step(CONTROL, StepKind.GATE, Gate(components.REGISTRY.gate),
                f"Harbor answers https://{hd.endpoint}/api/systeminfo (site CA)", items=(name,))
    return steps, [gate]


def files_steps(host: str, d: HostDesired, st: HostState, phase: str, h: Host,
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
        steps.append(Step(host, StepKind.PUT, path, reason + (f"; restarts {', '.join(units)}" if units else ""),
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
        steps.append(Step(host, StepKind.BINARY, path, reason + (f"; restarts {', '.join(units)}" if units else ""),
                          source=src, units=units))
        restart.update(units)
    if phase == "packages" and d.repo:
        missing = tuple(p for p, s in sorted(d.repo.items())
                        if f.files.get(p) is None or f.files[p].sha256 != s.sha256)
        if missing:
            steps.append(Step(host, StepKind.REPO, REPO_DIR, f"{len(missing)} of {len(d.repo)} repository files to copy "
                              f"(baseurl=file://{REPO_DIR})", items=missing))
    return steps, restart


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unit_steps(host: str, units: Sequence[str], st: HostState, restart: Set[str],
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
        steps.append(Step(host, StepKind.DAEMON_RELOAD, "daemon-reload", "unit files changed"))
    for u in enable:
        steps.append(Step(host, StepKind.ENABLE, u, "start at boot"))
    for u, why in todo:
        steps.append(Step(host, StepKind.RESTART, u, why, command=f"systemctl restart {u}"))
    return steps


def os_prep_steps(host: str, h: Host, inv: Inventory, d: HostDesired, st: HostState) -> List[Step]:
    f = st.facts
    c = inv.cluster
    steps, _ = files_steps(host, d, st, "os-prep", h, set())
    changed = {s.target for s in steps}
    ctr = f.container
    if f.hostname and f.hostname != h.name:
        steps.append(Step(host, StepKind.COMMAND, "hostname", f"hostname is {f.hostname!r}, the inventory says {h.name!r}",
                          command=f"hostnamectl set-hostname {h.name}"))
    if "/etc/sysctl.d/k8s.conf" in changed:
        steps.append(Step(host, StepKind.RESTART, "systemd-sysctl", "sysctl settings changed",
                          command="systemctl restart systemd-sysctl"))
        if ctr:
            steps.append(Step(host, StepKind.SKIP, "sysctl", f"container host ({ctr}): only net.* keys apply; vm.* and "
                              "other global keys are the machine's"))
    if "/etc/modules-load.d/k8s.conf" in changed or not {"bridge-nf", "overlay"} <= f.kernel_features:
        if ctr:
            if "/etc/modules-load.d/k8s.conf" in changed:
                steps.append(Step(host, StepKind.SKIP, "modprobe", f"container host ({ctr}): kernel modules are the "
                                  f"machine's (bridge-nf: {'yes' if 'bridge-nf' in f.kernel_features else 'no'}, "
                                  f"overlay: {'yes' if 'overlay' in f.kernel_features else 'no'})"))
        else:
            mods = list(MODULES) + (["ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack_ipv4"]
                                    if h.has("lb") else [])
            steps.append(Step(host, StepKind.COMMAND, "modprobe", "load the modules Kubernetes needs now (also at boot "
                              "via modules-load.d)", command=" && ".join(f"modprobe {m}" for m in mods)))
    if f.swap_on:
        steps.append(Step(host, StepKind.COMMAND, "swapoff", f"swap is on ({', '.join(f.swaps)}); the kubelet refuses swap",
                          command="swapoff -a && sed -ri '/^[^#].*\\sswap\\s/s/^/#/' /etc/fstab"))
    if c.selinux != "keep" and f.selinux == "Enforcing":
        if ctr:
            steps.append(Step(host, StepKind.SKIP, "selinux", f"container host ({ctr}): SELinux is the machine's"))
        else:
            mode = "permissive" if c.selinux == "permissive" else "disabled"
            steps.append(Step(host, StepKind.COMMAND, "selinux", f"SELinux is enforcing; cluster.selinux={c.selinux}",
                              command=f"setenforce 0 && sed -ri 's/^SELINUX=.*/SELINUX={mode}/' /etc/selinux/config"))
    fw = (f.units or {}).get("firewalld")
    if c.firewalld == "disable" and fw is not None and (fw.running or fw.file == "enabled"):
        steps.append(Step(host, StepKind.COMMAND, "firewalld", "firewalld would block cluster traffic "
                          "(cluster.firewalld=disable)", command="systemctl disable --now firewalld"))
    return steps

