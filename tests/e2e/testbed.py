"""Booted test hosts: systemd-nspawn containers with real systemd + sshd on 198.18.0.0/15 (TESTBED.md)."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

WORKDIR = "/var/tmp/k8s-offline-tb"
SUITE = "bookworm"
# Bump when the finishing steps below change: a published rootfs is never modified (overlay lowerdir rule).
VERSION_TAG = "tb4"
PACKAGES = tuple(sorted(set("""
    systemd systemd-sysv dbus iproute2 openssh-server sudo python3-minimal python3 dnf rpm curl
    ca-certificates procps iptables kmod psmisc iputils-ping docker.io python3-grpcio
    liblua5.3-0 libopentracing-c-wrapper0 libopentracing1 libglib2.0-0 libmnl0 libnftnl11 libnl-3-200
    libnl-genl-3-200 libpci3 libsensors5 libsnmp40 libwrap0
""".split())))  # last 2 lines: the libraries that this machine's haproxy/keepalived binaries need
# python3-grpcio: the stand-in kube-apiserver talks gRPC to etcd (tests/fixtures/standins/_etcd.py).
# docker.io (20.10, with containerd, runc, tini) is in the rootfs because hosts have no mirror: the fixture
# docker-ce RPMs carry wrappers that exec these real binaries. Where Debian's docker pieces are put aside:
DOCKER_ASIDE = "/usr/libexec/tb-docker"

SSH_OPTS = (
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
    "-o", "BatchMode=yes", "-o", "ConnectTimeout=3",
)
CGROUP = Path("/sys/fs/cgroup")
PROPAGATE = Path("/run/systemd/nspawn/propagate")

# TESTBED 8, extra 2, run inside each host at boot (the machine name is filled in per host). nspawn mounts the
# machine's cgroup v1 controllers read-only, so dockerd cannot make its cgroups. For each controller this mounts
# the machine's hierarchy, makes <machine>-docker in it and binds that over /sys/fs/cgroup/<controller>: docker's
# /docker/<id> cgroups land in <machine>-docker/docker/<id> on the machine (daemon.json needs no cgroup-parent),
# and the teardown's rmdir of <machine>* in every hierarchy removes them. name=systemd is the host's own
# writable subtree already and stays as it is.
CGROUP_RW_SCRIPT = """#!/usr/bin/python3
# Installed by the testbed (tests/e2e/testbed.py), not by the installer: see cgroup-rw.service.
import os, subprocess, sys
MACHINE = %(machine)r
FLAGS = {"rw", "ro", "noprefix", "clone_children", "xattr", "cpuset_v2_mode"}
for line in open("/proc/self/mountinfo").read().splitlines():
    left, right = line.split(" - ", 1)
    fstype, _source, sopts = right.split()[:3]
    mountpoint = left.split()[4]
    ctrls = [o for o in sopts.split(",") if o not in FLAGS]
    if fstype != "cgroup" or not ctrls or any(o.startswith("name=") for o in ctrls):
        continue
    tmp = "/run/tb-cgroup/" + "_".join(ctrls)
    os.makedirs(tmp, exist_ok=True)
    subprocess.run(["mount", "-t", "cgroup", "-o", ",".join(ctrls), "cgroup", tmp], check=True)
    try:
        mine = os.path.join(tmp, MACHINE + "-docker")
        os.makedirs(mine, exist_ok=True)
        if "cpuset" in ctrls:  # a new cpuset has no cpus/mems; runc fills parents only up to the mount point
            for f in ("cpuset.cpus", "cpuset.mems"):
                if not open(os.path.join(mine, f)).read().strip():
                    open(os.path.join(mine, f), "w").write(open(os.path.join(tmp, f)).read())
        subprocess.run(["umount", mountpoint], check=True)
        subprocess.run(["mount", "--bind", mine, mountpoint], check=True)
    finally:
        subprocess.run(["umount", tmp], check=True)
        os.rmdir(tmp)
    print(f"{mountpoint}: writable, the machine's /{MACHINE}-docker", file=sys.stderr)
"""
CGROUP_RW_UNIT = """[Unit]
Description=testbed: writable cgroup v1 controllers for docker, confined to this host's own cgroups
DefaultDependencies=no
Before=containerd.service docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/tb-cgroup-rw

[Install]
WantedBy=multi-user.target
"""


class TestbedError(RuntimeError):
    """A testbed step failed; the message names the step and where its log is."""

    __test__ = False


@dataclass(frozen=True)
class TbHost:
    """One booted host: number n (1-based), name h<n>, address, nspawn machine name."""

    n: int
    name: str
    address: str
    machine: str


def _sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a local command, text output captured."""
    p = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if check and p.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} -> rc {p.returncode}: {p.stderr.strip()[-2000:]}")
    return p


def _mirror() -> str:
    """The Debian mirror from this machine's apt config (deb822 first, then one-line format)."""
    texts = [p.read_text(errors="replace") for p in sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    sl = Path("/etc/apt/sources.list")
    if sl.exists():
        texts.append(sl.read_text(errors="replace"))
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("URIs:"):
                return line.split()[1]
            if line.startswith("deb "):
                urls = [w for w in line.split()[1:] if re.match(r"https?:", w)]
                if urls:
                    return urls[0]
    return "http://deb.debian.org/debian"


def rootfs_key(packages: Sequence[str] = PACKAGES, tag: str = VERSION_TAG, suite: str = SUITE) -> str:
    """Cache key of a rootfs: suite, variant, package list and version tag."""
    text = f"{suite} minbase {','.join(sorted(set(packages)))} {tag}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def rootfs_path(workdir: str = WORKDIR, packages: Sequence[str] = PACKAGES, tag: str = VERSION_TAG) -> Path:
    """Where the cached rootfs for this package list lives (it may not be built yet)."""
    return Path(workdir) / f"rootfs-{rootfs_key(packages, tag)}"


def _mounts_under(path: Path) -> List[str]:
    """Mount points at or below path, deepest first."""
    prefix = str(path)
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        mp = line.split()[1].replace("\\040", " ")
        if mp == prefix or mp.startswith(prefix + "/"):
            found.append(mp)
    return sorted(found, key=len, reverse=True)


def _remove_tree(path: Path) -> None:
    """rm -rf path, but never through a mount point (a crashed debootstrap leaves /proc, /sys mounted)."""
    if not path.exists():
        return
    for mp in _mounts_under(path):
        subprocess.run(["umount", mp], stderr=subprocess.DEVNULL)
        if mp in _mounts_under(path):
            subprocess.run(["umount", "-l", mp], stderr=subprocess.DEVNULL)
    if _mounts_under(path):
        raise TestbedError(f"refusing to remove {path}: still mounted: {_mounts_under(path)}")
    shutil.rmtree(path)


def _finish_rootfs(r: Path) -> None:
    """TESTBED sections 1 and 5: identity reset, per-boot host keys, user tb, volatile journal, rpm/dnf."""
    (r / "etc/hostname").write_text("localhost\n")  # debootstrap copies the build machine's hostname
    (r / "etc/resolv.conf").write_text("")  # hosts get no DNS
    (r / "etc/machine-id").write_text("")  # empty => every boot gets its own id
    with contextlib.suppress(FileNotFoundError):
        (r / "var/lib/dbus/machine-id").unlink()
    for k in (r / "etc/ssh").glob("ssh_host_*"):
        k.unlink()  # made per host at first boot, in its upper dir
    d = r / "etc/systemd/system/ssh.service.d"
    d.mkdir(parents=True, exist_ok=True)
    (d / "hostkeys.conf").write_text(
        "[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n")
    _sh("chroot", str(r), "useradd", "-m", "-s", "/bin/bash", "tb")
    sudoers = r / "etc/sudoers.d/tb"
    sudoers.write_text("tb ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)
    d = r / "etc/systemd/journald.conf.d"
    d.mkdir(parents=True, exist_ok=True)
    (d / "tb.conf").write_text("[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n")
    for sub in ("etc/rpm", "etc/yum.repos.d", "etc/dnf/vars"):
        (r / sub).mkdir(parents=True, exist_ok=True)
    # Debian's rpm defaults to ~/.rpmdb: root and tb would see different databases
    (r / "etc/rpm/macros").write_text("%_dbpath /var/lib/rpm\n")
    _sh("chroot", str(r), "rpm", "--initdb")
    (r / "etc/dnf/vars/releasever").write_text("7\n")  # else every dnf call warns
    _docker_aside(r)
    _sh("chroot", str(r), "apt-get", "clean")
    shutil.rmtree(r / "var/lib/apt/lists", ignore_errors=True)
    (r / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    for f in (r / "var/cache/apt").glob("*.bin"):
        f.unlink()


def _docker_aside(r: Path) -> None:
    """Debian's docker.io is in the rootfs, but a host runs no docker until the installer installs docker-ce:
    no enabled docker/containerd units, no docker.socket or SysV script that could start dockerd, and the
    Debian CLI moved where the docker-ce-cli RPM's /usr/bin/docker (a wrapper) does not overwrite it.
    /usr/sbin/dockerd stays: the docker-ce RPM's /usr/bin/dockerd wrapper execs it."""
    for wants in (r / "etc/systemd/system").glob("*.wants"):
        for unit in ("docker.service", "docker.socket", "containerd.service"):
            with contextlib.suppress(FileNotFoundError):
                (wants / unit).unlink()
    for rc in r.glob("etc/rc?.d/[SK][0-9][0-9]docker"):
        rc.unlink()
    aside = r / DOCKER_ASIDE.lstrip("/")
    aside.mkdir(parents=True, exist_ok=True)
    # docker.socket would socket-activate dockerd; without a docker.service file, systemd-sysv-generator
    # would make one from /etc/init.d/docker. The docker-ce RPM brings its own unit (cluster.DOCKER_UNIT).
    for rel in ("usr/lib/systemd/system/docker.service", "usr/lib/systemd/system/docker.socket",
                "etc/init.d/docker", "usr/bin/docker"):
        src = r / rel
        if not src.exists():
            raise TestbedError(f"rootfs: {rel} missing (is docker.io in the package list?)")
        os.rename(src, aside / src.name)
    for rel in ("usr/sbin/dockerd", "usr/bin/containerd", "usr/sbin/runc"):
        if not (r / rel).exists():
            raise TestbedError(f"rootfs: {rel} missing from docker.io's dependencies")
    # the containerd.io fixture RPM writes stand-ins over /usr/bin/containerd*: the real ones live aside, and
    # the docker-ce fixture's dockerd puts this directory first in PATH (dockerd spawns containerd from PATH)
    for src in sorted((r / "usr/bin").glob("containerd*")):
        os.rename(src, aside / src.name)


def ensure_rootfs(workdir: str = WORKDIR, packages: Sequence[str] = PACKAGES, tag: str = VERSION_TAG,
                  log=print) -> Path:
    """Build the cached rootfs once (debootstrap ~100 s) under a flock; publish it atomically."""
    final = rootfs_path(workdir, packages, tag)
    if final.is_dir():
        return final
    Path(workdir).mkdir(parents=True, exist_ok=True)
    with open(Path(workdir) / "rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another builder may be running: wait, then reuse its result
        if final.is_dir():
            return final
        for stale in Path(workdir).glob(final.name + ".tmp.*"):
            _remove_tree(stale)  # we hold the lock, so no one else is building it
        tmp = Path(f"{final}.tmp.{os.getpid()}")
        blog = Path(f"{final}.log")
        log(f"testbed: building rootfs {final} (debootstrap, ~100 s; log {blog})")
        t = time.monotonic()
        with open(blog, "w") as out:
            rc = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(sorted(set(packages)))}",
                 SUITE, str(tmp), _mirror()], stdout=out, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            _remove_tree(tmp)
            raise TestbedError(f"debootstrap failed (rc {rc}); see {blog}")
        _finish_rootfs(tmp)
        os.rename(tmp, final)  # atomic publish: a half-built tree is never used
        log(f"testbed: rootfs ready in {time.monotonic() - t:.0f} s")
    return final


def _read_int(path: Path) -> Optional[int]:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """True if pid runs (a zombie counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> List[int]:
    """Direct children of pid."""
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int(Path(d, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                kids.append(int(d.name))
    return kids


def _cmdline(pid: int) -> List[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _cgroups_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return ""


def _cgroup_roots() -> List[Path]:
    """Hierarchies to put a host's nspawn into: hybrid (name=systemd + unified) or pure cgroup v2."""
    if (CGROUP / "unified").is_dir():
        return [CGROUP / "systemd", CGROUP / "unified"]
    if (CGROUP / "cgroup.controllers").exists():
        return [CGROUP]
    return [CGROUP / "systemd"]


def _hierarchies() -> List[Path]:
    """Every cgroup hierarchy (docker in a host makes dirs in the v1 controllers too)."""
    if (CGROUP / "cgroup.controllers").exists():
        return [CGROUP]
    return [p for p in CGROUP.iterdir() if p.is_dir()] if CGROUP.is_dir() else []


def _rmdir_tree(top: Path, timeout: float = 5.0) -> None:
    """rmdir a cgroup directory and all sub-cgroups, deepest first (cgroupfs only allows rmdir). A cgroup is
    busy until its last process is gone: the processes of a host's docker containers die with the host's
    PID namespace, but may take a moment to leave their cgroups, so retry until timeout."""
    deadline = time.monotonic() + timeout
    while top.is_dir():
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if not top.is_dir() or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def _v1_controller_cgroups() -> List[Path]:
    """This process's cgroup in each v1 controller hierarchy (not name=systemd, not unified), as a path.

    nspawn starts in these (only the name=systemd/unified ones are moved) and gives the host a cgroup
    namespace rooted there: the host's cgroup-rw.service makes <machine>-docker right below them. Mostly
    the hierarchy's root, but the process may sit deeper in some controller (e.g. memory, when a job
    runner confines it)."""
    mounts = {}  # frozenset of controllers -> (mount root, mount point)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        fields, rfields = left.split(), right.split()
        if rfields[0] == "cgroup":
            ctrls = frozenset(o for o in rfields[2].split(",") if o not in ("rw", "ro") and "=" not in o
                              and o not in ("noprefix", "clone_children", "xattr", "cpuset_v2_mode"))
            mounts.setdefault(ctrls, (fields[3], fields[4]))
    found = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, ctrls, path = line.split(":", 2)
        key = frozenset(c for c in ctrls.split(",") if c and "=" not in c)
        if key and key in mounts:
            root, mp = mounts[key]
            rel = os.path.relpath(path, root) if path.startswith(root) else None
            if rel is not None:
                found.append(Path(mp) / rel if rel != "." else Path(mp))
    return found


# Every booted systemd (and its journald, udev, logind) holds inotify instances of the machine's one root user:
# the kernel default of 128 runs out at a few dozen hosts across concurrent testbeds, and PID 1 then exits
# at boot with "Failed to allocate manager object: Too many open files".
INOTIFY_LIMITS = {"/proc/sys/fs/inotify/max_user_instances": 8192, "/proc/sys/fs/inotify/max_user_watches": 1048576}


def _raise_inotify_limits(log=print) -> None:
    """Raise the machine's inotify limits to INOTIFY_LIMITS where they are lower (never lower them)."""
    for path, want in INOTIFY_LIMITS.items():
        have = _read_int(Path(path))
        if have is not None and have < want:
            Path(path).write_text(f"{want}\n")
            log(f"testbed: raised {path.rsplit('/', 1)[-1]} from {have} to {want} (booted systemd needs inotify)")


def _netns_list() -> List[str]:
    p = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


class Testbed:
    """n_hosts booted hosts h1..hN at <net>.11.. behind a bridge; the control side is <net>.1."""

    __test__ = False  # not a test class

    def __init__(self, prefix: str = "tb0", net: str = "198.18.0", n_hosts: int = 3, workdir: str = WORKDIR,
                 packages: Sequence[str] = PACKAGES, nspawn_extra: Sequence[str] = (), log=None) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,4}", prefix):
            raise ValueError(f"prefix {prefix!r}: 1-5 lower-case letters/digits (interface names max 15)")
        if not re.fullmatch(r"198\.1[89]\.\d{1,3}", net):
            raise ValueError(f"net {net!r}: three octets inside 198.18.0.0/15, e.g. 198.18.0")
        self.prefix, self.net, self.n_hosts = prefix, net, n_hosts
        self.workdir = Path(workdir)
        self.rundir = self.workdir / prefix
        self.packages = tuple(packages)
        self.nspawn_extra = tuple(nspawn_extra)
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self._procs: Dict[int, subprocess.Popen] = {}

    # -- names ---------------------------------------------------------------------------------
    @property
    def hosts(self) -> List[TbHost]:
        return [self.host(n) for n in range(1, self.n_hosts + 1)]

    def host(self, n: Union[int, TbHost]) -> TbHost:
        """Host number n (1-based: host 1 is h1)."""
        if isinstance(n, TbHost):
            return n
        if not 1 <= n <= max(self.n_hosts, 1):
            raise IndexError(f"host numbers are 1..{self.n_hosts} (h1 is 1), got {n}")
        return TbHost(n, f"h{n}", f"{self.net}.{10 + n}", f"{self.prefix}h{n}")

    @property
    def control_address(self) -> str:
        return f"{self.net}.1"

    @property
    def vip(self) -> str:
        return f"{self.net}.100"

    @property
    def key_path(self) -> Path:
        return self.rundir / "id_tb"

    @property
    def rootfs(self) -> Path:
        return rootfs_path(str(self.workdir), self.packages)

    def hostdir(self, n: Union[int, TbHost]) -> Path:
        return self.rundir / self.host(n).name

    def merged(self, n: Union[int, TbHost]) -> Path:
        """The host's root filesystem as seen from the control side (overlay mount)."""
        return self.hostdir(n) / "merged"

    # -- up ------------------------------------------------------------------------------------
    def up(self, timeout: float = 90.0) -> "Testbed":
        """Build/reuse the rootfs, then network, overlays, boot all hosts in parallel, wait for ssh."""
        ours = re.compile(re.escape(self.prefix) + r"(sw|h\d+)")
        if self.rundir.exists() or any(ours.fullmatch(ns) for ns in _netns_list()):
            self.log(f"testbed {self.prefix}: leftovers of an earlier run, tearing down first")
            self.down()
        rootfs = ensure_rootfs(str(self.workdir), self.packages, log=self.log)
        _raise_inotify_limits(self.log)
        t0 = time.monotonic()
        self.rundir.mkdir(parents=True)
        self._write_state(rootfs)
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"tb-{self.prefix}",
            "-f", str(self.key_path))
        self._net_up()
        for h in self.hosts:
            self._prep(h, rootfs)
        for h in self.hosts:
            self._boot(h)
        with ThreadPoolExecutor(max_workers=max(1, self.n_hosts)) as pool:
            list(pool.map(lambda h: self._wait_ready(h, t0 + timeout), self.hosts))
        self.log(f"testbed {self.prefix}: {self.n_hosts} hosts up in {time.monotonic() - t0:.1f} s")
        return self

    def _write_state(self, rootfs: Path) -> None:
        state = {"prefix": self.prefix, "net": self.net, "n_hosts": self.n_hosts, "rootfs": str(rootfs),
                 "packages": list(self.packages), "key": str(self.key_path)}
        (self.rundir / "state.json").write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, prefix: str, workdir: str = WORKDIR) -> "Testbed":
        """The testbed that another process brought up (state in workdir), or an empty one to tear down."""
        state_file = Path(workdir) / prefix / "state.json"
        if state_file.exists():
            s = json.loads(state_file.read_text())
            return cls(prefix, s["net"], s["n_hosts"], workdir, packages=s["packages"])
        return cls(prefix, "198.18.0", 0, workdir)

    def _net_up(self) -> None:
        """TESTBED 3: the bridge lives in a switch netns; the root ns only gets veth <P>c0 = <net>.1/24."""
        p, sw = self.prefix, f"{self.prefix}sw"
        ip = lambda *a: _sh("ip", *a)  # noqa: E731
        ip("netns", "add", sw)
        ip("-n", sw, "link", "add", "br0", "type", "bridge")
        ip("-n", sw, "link", "set", "br0", "up")
        ip("-n", sw, "link", "set", "lo", "up")
        ip("link", "add", f"{p}c0", "type", "veth", "peer", "name", "c0", "netns", sw)
        ip("-n", sw, "link", "set", "c0", "master", "br0", "up")
        ip("addr", "add", f"{self.control_address}/24", "dev", f"{p}c0")
        ip("link", "set", f"{p}c0", "up")
        for h in self.hosts:
            ns = h.machine
            ip("netns", "add", ns)
            ip("-n", sw, "link", "add", h.name, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("-n", sw, "link", "set", h.name, "master", "br0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{h.address}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "route", "add", "default", "via", self.control_address)

    def _prep(self, h: TbHost, rootfs: Path) -> None:
        """TESTBED 2: overlay over the shared rootfs, hostname, /etc/hosts, authorized keys."""
        d = self.hostdir(h)
        for sub in ("upper", "work", "merged"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        m = d / "merged"
        _sh("mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={rootfs},upperdir={d / 'upper'},workdir={d / 'work'}", str(m))
        (m / "etc/hostname").write_text(h.name + "\n")
        lines = ["127.0.0.1 localhost", f"127.0.1.1 {h.name}"]
        lines += [f"{o.address} {o.name}" for o in self.hosts]
        (m / "etc/hosts").write_text("\n".join(lines) + "\n")
        self._docker_extras(h, d, m)
        pub = self.key_path.with_suffix(".pub").read_bytes()
        for home, uid in (("root", 0), ("home/tb", 1000)):
            sshdir = m / home / ".ssh"
            sshdir.mkdir(mode=0o700, exist_ok=True)
            os.chown(sshdir, uid, uid)
            ak = sshdir / "authorized_keys"
            ak.write_bytes(pub)
            ak.chmod(0o600)
            os.chown(ak, uid, uid)

    def docker_dir(self, n: Union[int, TbHost]) -> Path:
        """The host's /var/lib/docker: a plain directory of the run dir (overlay2 cannot work on overlayfs)."""
        return self.hostdir(n) / "docker"

    def _docker_extras(self, h: TbHost, d: Path, m: Path) -> None:
        """TESTBED 8: what a host needs to run the real dockerd (extras 1 and 3 are nspawn options in _boot)."""
        (d / "docker").mkdir(exist_ok=True)
        script = m / "usr/local/sbin/tb-cgroup-rw"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(CGROUP_RW_SCRIPT % {"machine": h.machine})
        script.chmod(0o755)
        units = m / "etc/systemd/system"
        (units / "cgroup-rw.service").write_text(CGROUP_RW_UNIT)
        wants = units / "multi-user.target.wants"
        wants.mkdir(exist_ok=True)
        link = wants / "cgroup-rw.service"
        if not link.is_symlink():
            link.symlink_to("/etc/systemd/system/cgroup-rw.service")

    def _boot(self, h: TbHost) -> None:
        """TESTBED 3: nspawn in its own cgroup (required without systemd as PID 1), console to a file."""
        d = self.hostdir(h)
        cg_dirs = []
        for root in _cgroup_roots():
            cg = root / h.machine
            cg.mkdir(exist_ok=True)
            cg_dirs.append(str(cg / "cgroup.procs"))
        argv = ["systemd-nspawn", "-q", "-D", str(d / "merged"), "-M", h.machine, "--boot", "--register=no",
                "--keep-unit", "--console=read-only", "--resolv-conf=off",
                f"--network-namespace-path=/run/netns/{h.machine}",
                "--capability=CAP_NET_ADMIN,CAP_NET_RAW",
                # TESTBED 8: dockerd's storage off the overlay, and the session keyring runc joins
                f"--bind={self.docker_dir(h)}:/var/lib/docker", "--system-call-filter=@keyring",
                *self.nspawn_extra]
        # sh moves itself into the cgroups, then execs nspawn: so the PID we record is nspawn's
        script = 'for f in ' + " ".join(f"'{c}'" for c in cg_dirs) + '; do echo $$ > "$f"; done; exec "$@"'
        env = dict(os.environ, SYSTEMD_NSPAWN_API_VFS_WRITABLE="network")
        with open(d / "console.log", "wb") as out:
            proc = subprocess.Popen(["sh", "-c", script, "sh", *argv], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._procs[h.n] = proc
        (d / "nspawn.pid").write_text(f"{proc.pid}\n")
        docker_cgroups = [str(c / f"{h.machine}-docker") for c in _v1_controller_cgroups()]
        (d / "docker-cgroups.json").write_text(json.dumps(docker_cgroups, indent=1) + "\n")

    def _docker_cgroups(self, h: TbHost) -> List[Path]:
        """Where the host's docker cgroups live on the machine (recorded at boot), deepest hierarchy paths."""
        try:
            return [Path(p) for p in json.loads((self.rundir / h.name / "docker-cgroups.json").read_text())]
        except (OSError, ValueError):
            return []

    def _wait_ready(self, h: TbHost, deadline: float) -> None:
        """Wait until ssh answers and boot has finished; record the container leader's PID."""
        pid = _read_int(self.hostdir(h) / "nspawn.pid")
        while True:
            if pid is None or not self._nspawn_alive(h.n, pid):
                raise TestbedError(f"{h.name}: systemd-nspawn exited during boot; console: "
                                   f"{self.hostdir(h) / 'console.log'}\n{self._console_tail(h)}")
            p = self.ssh(h, "systemctl is-system-running --wait >/dev/null 2>&1; true", check=False,
                         timeout=30)
            if p.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise TestbedError(f"{h.name} ({h.address}): no ssh before the deadline: {p.stderr.strip()}; "
                                   f"console: {self.hostdir(h) / 'console.log'}")
            time.sleep(0.25)
        kids = _children(pid)
        if kids:
            (self.hostdir(h) / "leader.pid").write_text(f"{kids[0]}\n")

    def _console_tail(self, h: TbHost, n: int = 30) -> str:
        try:
            return "\n".join((self.hostdir(h) / "console.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _nspawn_alive(self, n: int, pid: int) -> bool:
        proc = self._procs.get(n)
        if proc is not None and proc.pid == pid:
            return proc.poll() is None  # also reaps it
        return _alive(pid)

    # -- use -----------------------------------------------------------------------------------
    def ssh_argv(self, n: Union[int, TbHost], user: str = "root") -> List[str]:
        """ssh command line (without the remote command) for host n."""
        return ["ssh", "-i", str(self.key_path), *SSH_OPTS, f"{user}@{self.host(n).address}"]

    def ssh(self, n: Union[int, TbHost], cmd: str, *, user: str = "root", check: bool = True,
            timeout: float = 60, input: Optional[str] = None) -> subprocess.CompletedProcess:
        """Run a shell command on host n (1-based) as user; text output captured."""
        argv = self.ssh_argv(n, user) + [cmd]
        try:
            p = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise TestbedError(f"{self.host(n).name}: timed out after {timeout} s: {cmd}") from e
        if check and p.returncode != 0:
            raise TestbedError(f"{self.host(n).name}: {cmd!r} -> rc {p.returncode}: "
                               f"{p.stderr.strip()[-2000:]}")
        return p

    def leader(self, n: Union[int, TbHost]) -> Optional[int]:
        """PID (root ns) of the host's systemd, for nsenter or /proc/<pid>/root."""
        pid = _read_int(self.hostdir(n) / "leader.pid")
        return pid if pid and self._is_leader(self.host(n), pid) else None

    def serve(self, directory: Union[str, Path], port: int = 8080) -> str:
        """Serve a directory over HTTP on the control address (a yum repo, TESTBED 5); returns the URL."""
        d = self.rundir / "servers"
        d.mkdir(exist_ok=True)
        log = open(d / f"http-{port}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", self.control_address,
                                 str(port), "--directory", str(directory)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._procs[-port] = proc
        (d / f"http-{port}.pid").write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection((self.control_address, port), 0.5):
                return f"http://{self.control_address}:{port}/"
            if proc.poll() is not None or time.monotonic() > deadline:
                raise TestbedError(f"http server on {self.control_address}:{port} did not start; "
                                   f"see {log.name}")
            time.sleep(0.05)

    def save_logs(self, dest: Union[str, Path], upper: bool = False) -> Path:
        """Copy each host's console.log and `journalctl -b` (volatile: gone once it stops) into dest."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for h in self.hosts:
            hd = self.hostdir(h)
            with contextlib.suppress(OSError):
                shutil.copy(hd / "console.log", dest / f"{h.name}.console.log")
            journal = ""
            with contextlib.suppress(Exception):
                journal = self.ssh(h, "journalctl -b --no-pager", check=False, timeout=20).stdout
            if not journal and self.leader(h):
                with contextlib.suppress(Exception):
                    journal = _sh("nsenter", "-t", str(self.leader(h)), "-a", "journalctl", "-b",
                                  "--no-pager", check=False, timeout=20).stdout
            (dest / f"{h.name}.journal.txt").write_text(journal)
            if upper and (hd / "upper").is_dir():
                subprocess.run(["cp", "-a", str(hd / "upper"), str(dest / f"{h.name}.upper")],
                               stderr=subprocess.DEVNULL)
        return dest

    def status(self) -> dict:
        """What runs: per host the nspawn PID, whether it is alive, and its address."""
        hosts = []
        for h in self.hosts:
            pid = _read_int(self.hostdir(h) / "nspawn.pid")
            hosts.append({"name": h.name, "address": h.address, "machine": h.machine, "nspawn_pid": pid,
                          "running": bool(pid and self._is_nspawn(h, pid))})
        return {"prefix": self.prefix, "net": self.net, "key": str(self.key_path),
                "rootfs": str(self.rootfs), "hosts": hosts}

    # -- down ----------------------------------------------------------------------------------
    def _is_nspawn(self, h: TbHost, pid: int) -> bool:
        """pid is this host's nspawn (guards against a recycled PID read from a file)."""
        argv = _cmdline(pid)
        return _alive(pid) and bool(argv) and argv[0].endswith("systemd-nspawn") and h.machine in argv

    def _is_leader(self, h: TbHost, pid: int) -> bool:
        return _alive(pid) and f"/{h.machine}/" in _cgroups_of(pid)

    def _known_hosts(self) -> List[TbHost]:
        """Hosts of this prefix from the state, the run dir and the netns list (partial setups included)."""
        ns = set()
        for h in self.hosts:
            ns.add(h.n)
        if self.rundir.is_dir():
            for d in self.rundir.glob("h*"):
                if d.name[1:].isdigit():
                    ns.add(int(d.name[1:]))
        for name in _netns_list():
            m = re.fullmatch(re.escape(self.prefix) + r"h(\d+)", name)
            if m:
                ns.add(int(m.group(1)))
        return [TbHost(n, f"h{n}", f"{self.net}.{10 + n}", f"{self.prefix}h{n}") for n in sorted(ns)]

    def down(self) -> List[str]:
        """Tear everything down (any partial setup, safe twice); returns what could not be removed."""
        t0 = time.monotonic()
        hosts = self._known_hosts()
        nspawn: Dict[int, int] = {}
        leaders: Dict[int, int] = {}
        for h in hosts:  # 1. ask all hosts to power off at once (SIGTERM to nspawn = clean poweroff)
            pid = _read_int(self.rundir / h.name / "nspawn.pid")
            if pid and self._is_nspawn(h, pid):
                nspawn[h.n] = pid
                for kid in _children(pid):
                    if self._is_leader(h, kid):
                        leaders[h.n] = kid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            lp = _read_int(self.rundir / h.name / "leader.pid")
            if lp and h.n not in leaders and self._is_leader(h, lp):
                leaders[h.n] = lp
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(self._nspawn_alive(n, p) for n, p in nspawn.items()):
            time.sleep(0.1)
        for h in hosts:  # 2. SIGKILL nspawn and the container's PID 1 (killing nspawn alone leaves systemd)
            pid = nspawn.get(h.n)
            if pid and self._nspawn_alive(h.n, pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            lp = leaders.get(h.n)
            if lp and self._is_leader(h, lp):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(lp, signal.SIGKILL)
            proc = self._procs.pop(h.n, None)
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        for h in hosts:  # 3. mounts, cgroups, nspawn's leftovers, netns
            merged = self.rundir / h.name / "merged"
            for _ in range(10):
                if not _mounts_under(merged):
                    break
                if subprocess.run(["umount", str(merged)], stderr=subprocess.DEVNULL).returncode != 0:
                    time.sleep(0.5)
            for root in _hierarchies():
                for top in root.glob(f"{h.machine}*"):  # incl. docker's cgroup-parent <machine>-docker
                    if top.is_dir() and re.fullmatch(re.escape(h.machine) + r"(-.*)?", top.name):
                        _rmdir_tree(top)
            for top in self._docker_cgroups(h):  # the host's docker cgroups below a non-root cgroup
                _rmdir_tree(top)
            shutil.rmtree(PROPAGATE / h.machine, ignore_errors=True)
            subprocess.run(["ip", "netns", "del", h.machine], stderr=subprocess.DEVNULL)
        # 4. control veth, then the switch
        subprocess.run(["ip", "link", "del", f"{self.prefix}c0"], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", f"{self.prefix}sw"], stderr=subprocess.DEVNULL)
        for pidfile in (self.rundir / "servers").glob("*.pid"):  # 5. repo servers
            pid = _read_int(pidfile)
            if pid and _alive(pid) and "http.server" in _cmdline(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        for key, proc in list(self._procs.items()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            self._procs.pop(key)
        problems = self.leftovers(hosts)
        if not _mounts_under(self.rundir):
            shutil.rmtree(self.rundir, ignore_errors=True)
        if hosts or problems:
            self.log(f"testbed {self.prefix}: down in {time.monotonic() - t0:.1f} s"
                     + (f"; left behind: {problems}" if problems else ""))
        return problems

    def leftovers(self, hosts: Optional[Iterable[TbHost]] = None) -> List[str]:
        """Traces of this testbed still on the machine: netns, links, mounts, processes, cgroup dirs."""
        hosts = list(hosts if hosts is not None else self._known_hosts())
        found = []
        ours = re.compile(re.escape(self.prefix) + r"(sw|h\d+)")
        found += [f"netns {ns}" for ns in _netns_list() if ours.fullmatch(ns)]
        if Path(f"/sys/class/net/{self.prefix}c0").exists():
            found.append(f"link {self.prefix}c0")
        found += [f"mount {m}" for m in _mounts_under(self.rundir)]
        names = [h.machine for h in hosts]
        # a host's own cgroups (/<machine>/...) and its docker containers' (/<machine>-docker/...)
        in_ours = re.compile("|".join(r":(/[^\n]*)?/" + re.escape(m) + r"(-docker)?(/|$)" for m in names), re.M)
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and _alive(int(d.name)):  # zombies wait for PID 1 to reap them
                argv = _cmdline(int(d.name))
                cg = _cgroups_of(int(d.name))
                if (names and in_ours.search(cg)) or (
                        argv and argv[0].endswith("systemd-nspawn") and any(m in argv for m in names)):
                    found.append(f"process {d.name} {' '.join(argv)[:80]}")
        for root in _hierarchies():
            for m in names:
                found += [f"cgroup {p}" for p in root.glob(f"{m}*")
                          if re.fullmatch(re.escape(m) + r"(-.*)?", p.name)]
        found += [f"cgroup {p}" for h in hosts for p in self._docker_cgroups(h)
                  if p.is_dir() and p.parent not in _hierarchies()]  # (those at the root are listed above)
        found += [f"dir {PROPAGATE / m}" for m in names if (PROPAGATE / m).exists()]
        return found


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI for the demo: up|down|status|rootfs; state lives in the workdir so `down` works from anywhere."""
    ap = argparse.ArgumentParser(prog="python -m tests.e2e.testbed", description=__doc__)
    ap.add_argument("action", choices=["up", "down", "status", "rootfs"])
    ap.add_argument("--prefix", default="tb0", help="<= 5 chars, distinct per concurrent testbed")
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--net", default="198.18.0", help="first three octets of the testbed's /24")
    ap.add_argument("--workdir", default=WORKDIR)
    a = ap.parse_args(argv)
    if a.action == "rootfs":
        print(ensure_rootfs(a.workdir))
        return 0
    if a.action == "up":
        tb = Testbed(a.prefix, a.net, a.hosts, a.workdir)
        try:
            tb.up()
        except BaseException:
            tb.down()
            raise
        print(json.dumps(tb.status(), indent=2))
        return 0
    tb = Testbed.load(a.prefix, a.workdir)
    if a.action == "status":
        print(json.dumps(tb.status(), indent=2))
        return 0
    problems = tb.down()
    for p in problems:
        print(f"left behind: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
