"""Host facts in one round trip: a POSIX sh script prints sections, a pure parser turns them into Facts.

The script runs unchanged on CentOS 7 (bash as sh, coreutils 8.22, iproute 3.10/4.11, systemd 219)
and Debian; every probe tolerates a missing command, and a missing section means "unknown".
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from contract.errors import Error
from installer import facts_hashes
from installer.hosts.connector import Connector

MARK = "@@k8s-facts@@"
UNIT_PROPS = ("Id", "LoadState", "ActiveState", "SubState", "UnitFileState")
DEFAULT_COMMANDS = (
    "systemctl", "rpm", "yum", "dnf", "sudo", "ss", "iptables", "ip", "docker", "getenforce", "setenforce",
    "modprobe", "sysctl", "swapoff", "timedatectl", "hostnamectl", "systemd-detect-virt", "sha256sum",
    "curl", "tar", "firewall-cmd", "chronyc", "ntpd",
)
DISK_PATHS = ("/", "/var")


def _empty() -> Mapping:
    return MappingProxyType({})


@dataclass(frozen=True)
class FileState:
    """A managed file as it is on the host."""

    sha256: str
    mode: int
    owner: str
    group: str


@dataclass(frozen=True)
class UnitState:
    """A systemd unit as `systemctl show` reports it."""

    load: str  # loaded | not-found | masked | ...
    active: str  # active | inactive | failed | activating | ...
    sub: str  # running | dead | exited | ...
    file: str  # enabled | disabled | static | masked | "" (no unit file)

    @property
    def exists(self) -> bool:
        return self.load not in ("not-found", "")

    @property
    def running(self) -> bool:
        return self.active == "active"

    @property
    def enabled(self) -> bool:
        return self.file in ("enabled", "enabled-runtime", "static", "indirect", "generated")


@dataclass(frozen=True)
class Facts:
    """What one host looks like now; None means the host could not tell (command or file missing)."""

    host: str
    hostname: str
    os_id: str  # centos | rhel | debian | ...
    os_version: str  # VERSION_ID: "7", "12"
    os_family: str  # redhat | debian | suse | <os_id>
    os_name: str  # PRETTY_NAME
    arch: str
    kernel: str
    cpus: Optional[int] = None
    mem_total_kb: Optional[int] = None
    time_offset: Optional[float] = None  # host clock minus control clock, seconds
    rtt: Optional[float] = None  # transport round trip of the facts call, seconds
    swaps: Tuple[str, ...] = ()  # active swap devices/files
    disk_free_kb: Mapping[str, int] = field(default_factory=_empty)  # "/" and "/var" -> available KiB
    listening: Tuple[Tuple[str, int], ...] = ()  # (address, port) of listening TCP sockets
    packages: Optional[Mapping[str, str]] = None  # rpm name -> version-release; None without rpm
    files: Mapping[str, Optional[FileState]] = field(default_factory=_empty)  # path -> state; None: missing
    units: Optional[Mapping[str, UnitState]] = None  # None when systemd does not run
    container: Optional[str] = None  # systemd-nspawn, docker, lxc, ...; None on a VM/bare metal
    selinux: Optional[str] = None  # Enforcing | Permissive | Disabled; None without SELinux tools
    commands: FrozenSet[str] = frozenset()  # which of the asked commands exist
    kernel_features: FrozenSet[str] = frozenset()  # bridge-nf, overlay
    probes: Mapping[str, int] = field(default_factory=_empty)  # probe name -> exit status (script(probes=...))
    extra: Mapping[str, str] = field(default_factory=_empty, compare=False)  # raw text of unknown sections

    @property
    def ports(self) -> FrozenSet[int]:
        return frozenset(p for _a, p in self.listening)

    @property
    def swap_on(self) -> bool:
        return bool(self.swaps)

    def has(self, command: str) -> bool:
        return command in self.commands

    def sha256(self, path: str) -> Optional[str]:
        st = self.files.get(path)
        return st.sha256 if st else None


# -- the script ----------------------------------------------------------------------------------

def script(managed_files: Sequence[str] = (), units: Sequence[str] = (),
           commands: Sequence[str] = DEFAULT_COMMANDS, probes: Sequence[Tuple[str, str]] = (), *,
           hash_cache: Optional[str] = facts_hashes.HASH_CACHE, update_cache: bool = True) -> str:
    """The POSIX sh script that prints every section, each after a line `@@k8s-facts@@ <name>`.

    probes: (name, sh command) pairs run in a subshell with no output kept; the `probes` section lists
    "<name> <exit status>" (what role-specific facts such as etcd's authentication state need).
    hash_cache: where the host keeps the sums of unchanged files (installer.facts_hashes; None: no cache);
    update_cache=False reads it but never writes it (plan changes nothing on the hosts)."""
    q = shlex.quote
    unit_args = " ".join(q(u) for u in units)
    cmds = " ".join(q(c) for c in commands)
    has = "command -v {} >/dev/null 2>&1".format
    lines = [
        f"m() {{ printf '\\n{MARK} %s\\n' \"$1\"; }}",
        "m t0; date +%s.%N",
        "m os; cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null",
        "m arch; uname -m",
        "m kernel; uname -r",
        "m hostname; uname -n",
        "m cpus; getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null",
        "m meminfo; grep -E '^(MemTotal|SwapTotal):' /proc/meminfo 2>/dev/null",
        "m swaps; cat /proc/swaps 2>/dev/null",
        "m df; df -Pk " + " ".join(DISK_PATHS) + " 2>/dev/null",
        f"if {has('ss')}; then m ss; ss -ltn 2>/dev/null; else m proc-tcp; "
        "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; fi",
        f"if {has('rpm')}; then m rpm; "
        "rpm -qa --qf '%{NAME}\\t%{VERSION}-%{RELEASE}\\n' 2>/dev/null; fi",
    ]
    if managed_files:
        # one line per file, in the order asked: "<sha256> <mode> <owner> <group>" or "-" if not a file
        lines += ["m files", *facts_hashes.files_section(managed_files, hash_cache, update_cache)]
    if units:
        lines.append(
            f"if {has('systemctl')} && [ -d /run/systemd/system ]; then m units; "
            f"systemctl show -p {','.join(UNIT_PROPS)} {unit_args} 2>/dev/null; fi")
    lines += [
        f"m virt; if {has('systemd-detect-virt')}; then systemd-detect-virt -c 2>/dev/null; "
        "else cat /run/systemd/container 2>/dev/null; fi",
        f"if {has('getenforce')}; then m selinux; getenforce 2>/dev/null; fi",
        f"m commands; for c in {cmds}; do command -v \"$c\" >/dev/null 2>&1 && echo \"$c\"; done",
        "m kernel-features; [ -d /proc/sys/net/bridge ] && echo bridge-nf; "
        "grep -qw overlay /proc/filesystems 2>/dev/null && echo overlay",
    ]
    if probes:
        lines.append("m probes")
        for name, cmd in probes:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ValueError(f"probe name {name!r}")
            lines.append(f"( {cmd} ) </dev/null >/dev/null 2>&1; echo {name} $?")
    lines += [
        "m t1; date +%s.%N",
        "exit 0",
    ]
    return "\n".join(lines) + "\n"


# -- the parser (pure) ---------------------------------------------------------------------------

def sections(output: str) -> Dict[str, str]:
    """Split the script's output into {section name: text}."""
    found: Dict[str, List[str]] = {}
    current: Optional[List[str]] = None
    for line in output.splitlines():
        if line.startswith(MARK + " "):
            current = found.setdefault(line[len(MARK) + 1:].strip(), [])
        elif current is not None:
            current.append(line)
    return {k: "\n".join(v).strip("\n") for k, v in found.items()}


def parse_os_release(text: str) -> Dict[str, str]:
    """KEY=value lines, values unquoted the way a shell would."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            words = shlex.split(value)
            out[key.strip()] = " ".join(words) if words else ""
        except ValueError:
            out[key.strip()] = value.strip("\"'")
    return out


def os_family(os_id: str, id_like: str) -> str:
    """redhat | debian | suse | the ID itself."""
    names = {os_id.lower(), *id_like.lower().split()}
    if names & {"rhel", "centos", "fedora", "rocky", "almalinux", "ol"}:
        return "redhat"
    if names & {"debian", "ubuntu"}:
        return "debian"
    if names & {"suse", "sles", "opensuse"}:
        return "suse"
    return os_id.lower() or "unknown"


def parse_epoch(text: str) -> Optional[float]:
    """`date +%s.%N` output; a date without %N support prints a literal N."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        head = text.split(".")[0]
        return float(head) if head.isdigit() else None


def parse_swaps(text: str) -> Tuple[str, ...]:
    """Active swap devices from /proc/swaps (first line is the header)."""
    return tuple(line.split()[0] for line in text.splitlines()[1:] if line.strip())


def parse_df(text: str, paths: Sequence[str] = DISK_PATHS) -> Dict[str, int]:
    """`df -Pk A B` -> {A: available KiB, B: ...}; rows come in the order of the arguments."""
    rows = [line.split() for line in text.splitlines()[1:] if line.strip()]
    out = {}
    for path, row in zip(paths, rows):
        if len(row) >= 6 and row[3].isdigit():
            out[path] = int(row[3])
    return out


def _split_addr(local: str) -> Optional[Tuple[str, int]]:
    host, sep, port = local.rpartition(":")
    if not sep or not port.isdigit():
        return None
    host = host.strip("[]")
    if "%" in host:
        host = host.split("%")[0]  # 127.0.0.53%lo: address scoped to an interface
    return (host or "*", int(port))


def parse_ss(text: str) -> Tuple[Tuple[str, int], ...]:
    """`ss -ltn` (with or without its header, State column first) -> sorted unique (address, port)."""
    found = set()
    for line in text.splitlines():
        f = line.split()
        if not f or f[0] in ("State", "Netid", "Recv-Q"):
            continue
        # columns: State Recv-Q Send-Q Local:Port Peer:Port; old iproute may omit State
        idx = 3 if not f[0].isdigit() else 2
        if len(f) > idx:
            a = _split_addr(f[idx])
            if a:
                found.add(a)
    return tuple(sorted(found))


def _hex_addr(h: str) -> str:
    raw = bytes.fromhex(h)
    # /proc/net/tcp* prints the address as host-endian 32-bit words (little-endian on x86/arm)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def parse_proc_tcp(text: str) -> Tuple[Tuple[str, int], ...]:
    """/proc/net/tcp and tcp6 -> listening (address, port); the fallback when ss is missing."""
    found = set()
    for line in text.splitlines():
        f = line.split()
        if len(f) < 4 or f[0] == "sl" or f[3] != "0A":  # 0A = TCP_LISTEN
            continue
        addr, _, port = f[1].partition(":")
        try:
            found.add((_hex_addr(addr), int(port, 16)))
        except ValueError:
            continue
    return tuple(sorted(found))


def parse_rpm(text: str) -> Dict[str, str]:
    """NAME<TAB>VERSION-RELEASE lines (the last wins for multi-version packages such as kernel)."""
    out = {}
    for line in text.splitlines():
        name, sep, ver = line.partition("\t")
        if sep and name:
            out[name] = ver.strip()
    return out


def parse_files(text: str, paths: Sequence[str]) -> Dict[str, Optional[FileState]]:
    """One line per asked path: `<sha256> <mode> <owner> <group>` or `-`."""
    lines = text.splitlines()
    out: Dict[str, Optional[FileState]] = {}
    for i, path in enumerate(paths):
        f = lines[i].split() if i < len(lines) else []
        if len(f) == 4 and len(f[0]) == 64:
            try:
                out[path] = FileState(f[0], int(f[1], 8), f[2], f[3])
                continue
            except ValueError:
                pass
        out[path] = None
    return out


def parse_units(text: str, units: Sequence[str]) -> Dict[str, UnitState]:
    """`systemctl show -p ...` blocks (blank-line separated, in argument order) -> {asked name: state}."""
    blocks = []
    for chunk in text.replace("\r", "").split("\n\n"):
        props = {}
        for line in chunk.splitlines():
            k, sep, v = line.partition("=")
            if sep:
                props[k] = v
        if props:
            blocks.append(props)
    by_id = {b.get("Id", ""): b for b in blocks}
    out = {}
    for i, name in enumerate(units):
        b = by_id.get(name) or by_id.get(name + ".service")
        if b is None and len(blocks) == len(units):
            b = blocks[i]
        b = b or {}
        out[name] = UnitState(b.get("LoadState", "not-found"), b.get("ActiveState", "inactive"),
                              b.get("SubState", "dead"), b.get("UnitFileState", ""))
    return out


def parse_probes(text: str) -> Dict[str, int]:
    """{name: exit status} from "<name> <status>" lines; a line that does not parse is left out."""
    out = {}
    for line in text.splitlines():
        name, _, rc = line.strip().rpartition(" ")
        if name and rc.isdigit():
            out[name] = int(rc)
    return out


def parse(output: str, *, host: str, managed_files: Sequence[str] = (), units: Sequence[str] = (),
          local_start: Optional[float] = None, local_end: Optional[float] = None) -> Facts:
    """Facts from the script's output; local_start/end (control clock) give the time offset."""
    s = sections(output)
    if "os" not in s or "t1" not in s:
        raise Error(f"{host}: could not read host facts (the facts script stopped early)",
                    context=f"reading facts of {host}", details=output.strip().splitlines()[-10:],
                    hint="the host needs a POSIX sh with coreutils; run the facts script by hand to see why")
    osr = parse_os_release(s.get("os", ""))
    os_id = osr.get("ID", "unknown")
    t0, t1 = parse_epoch(s.get("t0", "")), parse_epoch(s.get("t1", ""))
    offset = rtt = None
    if None not in (t0, t1, local_start, local_end):
        # remote start/end bracket the script; symmetric transport delays cancel out in the sum
        offset = ((t0 + t1) - (local_start + local_end)) / 2
        rtt = max(0.0, (local_end - local_start) - (t1 - t0))
    mem = {}
    for line in s.get("meminfo", "").splitlines():
        k, _, v = line.partition(":")
        if v.split() and v.split()[0].isdigit():
            mem[k.strip()] = int(v.split()[0])
    cpus = s.get("cpus", "").strip()
    virt = s.get("virt", "").strip()
    if "ss" in s:
        listening = parse_ss(s["ss"])
    else:
        listening = parse_proc_tcp(s.get("proc-tcp", ""))
    known = {"t0", "t1", "os", "arch", "kernel", "hostname", "cpus", "meminfo", "swaps", "df", "ss",
             "proc-tcp", "rpm", "files", "units", "virt", "selinux", "commands", "kernel-features", "probes"}
    return Facts(
        host=host,
        hostname=s.get("hostname", "").strip(),
        os_id=os_id,
        os_version=osr.get("VERSION_ID", ""),
        os_family=os_family(os_id, osr.get("ID_LIKE", "")),
        os_name=osr.get("PRETTY_NAME", osr.get("NAME", os_id)),
        arch=s.get("arch", "").strip(),
        kernel=s.get("kernel", "").strip(),
        cpus=int(cpus) if cpus.isdigit() else None,
        mem_total_kb=mem.get("MemTotal"),
        time_offset=offset,
        rtt=rtt,
        swaps=parse_swaps(s.get("swaps", "")),
        disk_free_kb=MappingProxyType(parse_df(s.get("df", ""))),
        listening=listening,
        packages=MappingProxyType(parse_rpm(s["rpm"])) if "rpm" in s else None,
        files=MappingProxyType(parse_files(s.get("files", ""), managed_files)),
        units=MappingProxyType(parse_units(s["units"], units)) if "units" in s else None,
        container=virt if virt and virt != "none" else None,
        selinux=(s["selinux"].strip() or None) if "selinux" in s else None,
        commands=frozenset(s.get("commands", "").split()),
        kernel_features=frozenset(s.get("kernel-features", "").split()),
        probes=MappingProxyType(parse_probes(s.get("probes", ""))),
        extra=MappingProxyType({k: v for k, v in s.items() if k not in known}),
    )


def gather(connector: Connector, managed_files: Sequence[str] = (), units: Sequence[str] = (), *,
           commands: Sequence[str] = DEFAULT_COMMANDS, probes: Sequence[Tuple[str, str]] = (),
           timeout: float = 120, clock: Callable[[], float] = time.time,
           hash_cache: Optional[str] = facts_hashes.HASH_CACHE, update_cache: bool = True) -> Facts:
    """Read a host's facts with one command over the connector (hash cache as in `script`)."""
    text = script(managed_files, units, commands, probes, hash_cache=hash_cache, update_cache=update_cache)
    start = clock()
    res = connector.run(text, timeout=timeout)
    end = clock()
    return parse(res.stdout, host=connector.name, managed_files=managed_files, units=units,
                 local_start=start, local_end=end)
