"""The planner's rules, read from the component table (installer/components.py): which units a host runs in which
phase and start order, which files each unit reads (a change restarts exactly those), which packages a host
installs, the phase that writes each file, and which files a plan never shows."""

from __future__ import annotations

import fnmatch
import functools
from typing import Dict, Iterable, List, Optional, Tuple

from installer import components
from installer.components import ADDONS_DIR, ADDONS_UNIT, PHASES, REPO_DIR  # noqa: F401
from installer.inventory import Host
from installer.render import File

KUBECTL_APPLY = components.ADDONS_COMMAND


def addons_command(dns_addon: str) -> str:
    """`kubectl apply` of the addons, the DNS manifest first: its Service asks for the fixed cluster.dns_ip, and a
    Service applied before it without a clusterIP (the dashboard's, in directory order) may be given that very
    address by the apiserver's random allocation ("provided IP is already allocated")."""
    dns = f"{ADDONS_DIR}/{dns_addon}.yaml"
    kubectl = KUBECTL_APPLY.split(" apply ", 1)[0]
    return f"if [ -f {dns} ]; then {kubectl} apply -f {dns}; fi && {KUBECTL_APPLY}"
SECRET_DIRS = ("/etc/kubernetes/pki/", "/etc/etcd/pki/")
UNIT_PHASE = {name: c.phase for name, (_u, c) in components.UNITS.items()}
# Which files a unit reads: a change to one of them restarts exactly these units.
OWNERS: Dict[str, Tuple[str, ...]] = {name: u.reads for name, (u, _c) in components.UNITS.items()}
SHARED_FILES = ("/etc/hosts",)  # files of other hosts that add-node may change (no restart follows)
MODULES = ("br_netfilter", "overlay")


def wanted_packages(host: Host) -> Tuple[str, ...]:
    """Packages a host gets from the bundle's repo, by its roles."""
    out: List[str] = []
    for c in components.for_host(host):
        out += [p for p in c.packages if p not in out]
    return tuple(out)


def wanted_units(host: Host) -> Tuple[str, ...]:
    """Units a host runs, in phase and start order."""
    out: List[str] = []
    for c in components.for_host(host):
        out += [u for u in c.unit_names if u not in out]
    return tuple(out)


def owners(path: str, units: Iterable[str]) -> Tuple[str, ...]:
    """The units (of those given) that read path."""
    return tuple(u for u in units if any(fnmatch.fnmatchcase(path, p) for p in OWNERS.get(u, ())))


def declares(c: components.Component, path: str) -> bool:
    """Whether a component holds the file: one of its templates, executables, PKI material or other files, or a
    file one of its units reads."""
    return (any(path == t for t, _ in c.templates) or any(path == b.path for b in c.binaries)
            or any(path in (m.path, m.key_path) for m in c.material if m.path)
            or any(fnmatch.fnmatchcase(path, g) for g in c.files + tuple(r for u in c.units for r in u.reads)))


def owner_components(path: str, host: Host) -> Tuple[str, ...]:
    """The components (of those the host runs) that hold a file."""
    return tuple(c.name for c in components.for_host(host) if declares(c, path))


def phase_of(path: str, host: Host) -> str:
    """The phase that writes a file: the earliest phase of a unit that reads it, else of a component that holds it."""
    phase = _phase_of(path, _Roles(r for r in components.ROLES if host.has(r)))
    if phase is None:
        raise ValueError(f"no component of {host.name} holds {path} (installer/components.py)")
    return phase


class _Roles(tuple):
    """A host's roles, all that components.for_host reads of it (a hashable cache key)."""

    def has(self, role: str) -> bool:
        return role in self


@functools.lru_cache(maxsize=8192)
def _phase_of(path: str, host: _Roles) -> Optional[str]:
    """phase_of for the hosts with these roles (the planner asks it for every file in every phase of every host:
    hosts of one kind share the answer)."""
    units = owners(path, wanted_units(host))
    if units:
        return min((UNIT_PHASE[u] for u in units), key=PHASES.index)
    phases = [components.BY_NAME[c].phase for c in owner_components(path, host)]
    return min(phases, key=PHASES.index) if phases else None


def is_secret(path: str, f: Optional[File] = None) -> bool:
    """Files whose content never appears in a plan: keys, certificates' dirs, kubeconfigs (0600)."""
    return path.endswith(".key") or path.startswith(SECRET_DIRS) or (f is not None and f.mode & 0o077 == 0)

