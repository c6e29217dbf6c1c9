"""Preflight: what must hold on every host before apply changes anything, and how the etcd membership differs."""

from __future__ import annotations

from typing import List, Mapping, Optional

from installer import components
from installer.inventory import Inventory
from installer.plan_model import Check, HostDesired, HostState

MAX_TIME_SKEW = 2.0
MIN_DISK_KB = {"/": 1 << 20, "/var": 1 << 20}  # 1 GiB


def etcd_membership_problem(recorded: Optional[Mapping[str, str]], inv: Inventory) -> Optional[str]:
    """How the inventory's etcd members differ from the recorded membership (`recorded`), or None.

    apply makes such a change one member per run (installer.etcd_membership); this names all of them."""
    if not recorded:
        return None
    now = {m.name: m.address for m in inv.etcd_members}
    joining = sorted(n for n in now if n not in recorded)
    leaving = sorted(n for n in recorded if n not in now)
    moved = sorted(n for n in now if n in recorded and recorded[n] != now[n])
    parts = ([f"{', '.join(joining)} would join"] if joining else []) + \
        ([f"{', '.join(leaving)} would leave"] if leaving else []) + \
        ([f"{', '.join(f'{n} ({recorded[n]} -> {now[n]})' for n in moved)} changed address"] if moved else [])
    return "; ".join(parts) or None


def preflight(inv: Inventory, desired: Mapping[str, HostDesired], states: Mapping[str, HostState]) -> List[Check]:
    """Checks on facts only; none changes anything."""
    out: List[Check] = []
    c = inv.cluster
    ports_of = {name: tuple(getattr(c, p) if isinstance(p, str) else p for p in u.ports)
                for name, (u, _comp) in components.UNITS.items()}  # a str names the cluster setting
    for name, d in desired.items():
        st = states.get(name)
        if st is None:
            continue
        f = st.facts
        supported = (f.os_family == "redhat" and f.os_version.split(".")[0] == "7") or \
            (f.os_id == "debian" and f.os_version == "12")
        out.append(Check(name, "os", supported, f"{f.os_name or f.os_id} {f.os_version}"
                         + ("" if supported else " (supported: CentOS/RHEL 7; Debian 12 as the test OS)")))
        out.append(Check(name, "arch", f.arch == "x86_64", f.arch or "unknown"))
        if f.time_offset is None:
            out.append(Check(name, "clock", False, "could not compare the host's clock with this one"))
        else:
            # the estimate is off by at most half the round trip (the delays there and back may differ, e.g. a
            # loaded control host): only an offset beyond the limit by more than that is a skew for sure
            margin = (f.rtt or 0.0) / 2
            out.append(Check(name, "clock", abs(f.time_offset) - margin < MAX_TIME_SKEW,
                             f"offset {f.time_offset:+.2f} s ± {margin:.2f} s (limit {MAX_TIME_SKEW:.0f} s: TLS and "
                             "etcd need synchronized clocks; fix NTP/chrony)"))
        for path, need in MIN_DISK_KB.items():
            free = f.disk_free_kb.get(path)
            if free is not None:
                out.append(Check(name, f"disk {path}", free >= need, f"{free // 1024} MiB free"
                                 + ("" if free >= need else f", need {need // 1024} MiB")))
        units = f.units or {}
        busy = []
        for unit in d.units:
            # a unit still starting (or restarting after a failed start) holds its port too
            running = units.get(unit) is not None and units[unit].active in ("active", "activating", "reloading",
                                                                           "deactivating")
            for port in ports_of.get(unit, ()):
                if port in f.ports and not running:
                    busy.append(f"{port} (for {unit})")
        out.append(Check(name, "ports", not busy, "free or ours" if not busy else
                         "in use by another program: " + ", ".join(busy)))
        if d.packages:
            out.append(Check(name, "rpm", f.packages is not None and (f.has("yum") or f.has("dnf")),
                             "rpm and yum present" if f.packages is not None else "no rpm database: not a yum host"))
        out.append(Check(name, "systemd", f.units is not None, "running" if f.units is not None
                         else "systemd is not running (units cannot be managed)"))
        out.append(Check(name, "hostnames", True, "resolved through the managed /etc/hosts"))
    return out
