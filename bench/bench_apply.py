"""`installer apply` on booted test hosts: at release size on 6 hosts against `scp` of the same bytes, and on 3, 12
and 24 hosts (the scaling), each with its converged re-apply.

1. Release size (the stand-in upstreams' release-size profile: every executable at its real v1.10.3 size), 6 hosts
   (3 masters with etcd + lb, 3 nodes): the first apply is timed next to `scp` of every file each host gets from
   the bundle (its executables and the yum repository, the same local files) to the same 6 hosts at once, in the
   same run (before and after the apply; their mean is the baseline). Each file must cross to each host once:
   the journal's binary/repo steps of the first apply are counted against the desired state (asserted), and the
   converged re-apply must copy nothing. Then a byte of an executable is changed in place on a node and `plan`
   must see it (the facts hash cache keeps catching a changed byte: the write moved the file's ctime).
2. Scale, the small stand-ins (the test-size bundle): first and converged apply on 3, 12 and 24 hosts, one
   testbed at a time, with where the time of the 24-host first apply went (journal: per phase).

Goals: first apply <= 1.3x scp at release size; converged re-apply <= 2 s on 6 hosts; T(24)/T(3) <= 1.5 for the
first apply; converged re-apply of 24 hosts <= 5 s. Hosts are systemd-nspawn containers (tests/e2e/testbed.py) on
this machine: their CPU is the control host's. The load average is printed with each figure (a shared machine).
Needs root. Exits 1 when an assertion (each file once, the changed byte caught) fails or a goal is missed.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCP_GOAL = 1.3  # first apply / scp of the same bytes, release size, 6 hosts
REAPPLY_6_GOAL = 2.0  # seconds, converged re-apply on 6 hosts (release size)
SCALE_GOAL = 1.5  # T(24) / T(3), first apply
REAPPLY_24_GOAL = 5.0  # seconds, converged re-apply on 24 hosts
SCP_DIR = "/var/tmp/bench-scp"
LOGS: List[Optional[Path]] = [None]  # --logs: where each installer run's progress (stderr) is kept


class BenchFailed(Exception):
    """An installer run of the bench failed (its output is in the message)."""


def networks(tb, n: int) -> dict:
    """The cluster networks: the e2e ones (pods in /28s of a /25: at most 8 flanneld hosts) up to 8 hosts, else
    pods in /28s of 198.19.<net>.0/23 (32 hosts; <net> even) and services, docker0 in 198.19.<net + 2>.0/24."""
    from tests.e2e import cluster

    if n <= 8:
        return cluster.e2e_networks(tb)
    slot = int(tb.net.rsplit(".", 1)[1])
    assert slot % 2 == 0, "an even third octet for a /23 of pods"
    return {"pod_cidr": f"198.19.{slot}.0/23", "pod_subnet_len": 28, "service_cidr": f"198.19.{slot + 2}.0/26",
            "docker_bip": f"198.19.{slot + 2}.65/26"}


def inventory(tb, path: Path, n: int) -> Path:
    """3 masters (etcd + lb); with 3 hosts the third is also the node, with more hosts h4.. are nodes."""
    from tests.e2e import cluster

    hosts = []
    for i in range(1, n + 1):
        roles = ["master", "etcd", "lb"] if i <= 3 else ["node"]
        if n == 3 and i == 3:
            roles.append("node")
        h = tb.host(i)
        hosts.append({"name": h.name, "address": h.address, "roles": roles})
    path.write_text(yaml.safe_dump({
        "cluster": {"name": "bench", "vip": tb.vip, "interface": "eth0", **networks(tb, n)},
        "ssh": {"user": "root", "key": str(tb.key_path), "connect_timeout": 3},
        "registry": {"mode": "external", "hostname": "registry.bench.test", "address": tb.control_address,
                     "port": cluster.REGISTRY_PORT, "insecure": True, "project": "kubernetes"},
        "hosts": hosts,
    }, sort_keys=False))
    return path


def load() -> str:
    return "load %.1f/%.1f/%.1f" % os.getloadavg()


def idle_load(seconds: float = 5.0) -> float:
    """How many of the machine's cores were busy while nothing of the bench ran (the booted cluster's daemons and
    other users' work): the background a measurement shares the machine with."""
    b0, t0 = busy(), time.monotonic()
    time.sleep(seconds)
    return (busy() - b0) / (time.monotonic() - t0)


def busy() -> float:
    """CPU seconds this machine has spent not idle since boot (all cores; /proc/stat)."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # idle and iowait left out


class Bed:
    """One booted testbed with its registry, inventory and state directory."""

    def __init__(self, n: int, bundle, work: Path, prefix: str, net: str) -> None:
        self.n, self.bundle, self.work = n, bundle, work / f"{prefix}"
        self.prefix, self.net = prefix, net
        self.tb = self.reg = None

    def __enter__(self) -> "Bed":
        from tests.e2e import cluster
        from tests.e2e.testbed import Testbed

        self.work.mkdir(parents=True, exist_ok=True)
        self.tb = Testbed(prefix=self.prefix, net=self.net, n_hosts=self.n)
        try:
            t = time.monotonic()
            self.tb.up(timeout=180 + 40 * self.n)  # a loaded machine boots 24 hosts slowly
            cluster.register_base_rpms(self.tb, range(1, self.n + 1), self.bundle.base_rpms)
            self.reg = cluster.Registry(self.work / "registry", self.tb.control_address).start()
            print(f"  {self.n} hosts booted in {time.monotonic() - t:.0f} s", flush=True)
        except BaseException:
            self.__exit__()
            raise
        self.inv = inventory(self.tb, self.work / "inventory.yaml", self.n)
        self.state = self.work / "state"
        self.known_hosts = self.work / "known_hosts"
        return self

    def __exit__(self, *exc) -> None:
        if self.reg is not None:
            self.reg.stop()
        if self.tb is not None:
            self.tb.down()

    def installer(self, command: str, *extra: str) -> Tuple[float, str]:
        """Run an installer command; (seconds, stdout). self.cpu: its CPU seconds on the control host (the
        installer and its ssh clients), self.busy: CPU seconds the whole machine spent meanwhile (hosts too)."""
        from tests.e2e import cluster

        args = [command, "-b", str(self.bundle.path), "--pub", str(self.bundle.pub)] if command != "check" else [command]
        ru0, busy0 = resource.getrusage(resource.RUSAGE_CHILDREN), busy()
        t = time.monotonic()
        r = cluster.installer(*args, "-i", str(self.inv), "--state", str(self.state), "--known-hosts",
                              str(self.known_hosts), *extra, timeout=1800)
        took = time.monotonic() - t
        if LOGS[0] is not None:
            runs = len(list(LOGS[0].glob(f"{self.prefix}-*.log")))
            (LOGS[0] / f"{self.prefix}-{runs + 1:02d}-{command}.log").write_text(r.stderr + r.stdout)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
        self.busy = busy() - busy0
        if r.rc not in (0, 2) or (r.rc == 2 and "--detailed-exitcode" not in extra):
            raise BenchFailed(f"{command} on {self.n} hosts failed (rc {r.rc}):\n{r.stdout[-1000:]}\n{r.stderr[-1500:]}")
        return took, r.stdout

    def apply(self) -> float:
        return self.installer("apply")[0]

    def runs(self) -> List[List[dict]]:
        """The journal's entries, one list per run."""
        from installer.state import StateDir

        by_run: Dict[str, List[dict]] = {}
        for e in StateDir(self.state).journal.entries():
            by_run.setdefault(e.get("run"), []).append(e)
        return list(by_run.values())


# -- release size: each file once, against scp ------------------------------------------------------

def host_files(bed: Bed) -> Dict[str, Dict[str, Path]]:
    """{host: {remote path: local file}} of every bundle file apply copies (executables, yum repository)."""
    from installer.site import load_site

    site = load_site(bed.inv, bed.bundle.path, bed.bundle.pub, bed.state, lambda line: None)
    return {h: {**{p: site.local[s.origin] for p, s in d.binaries.items()},
                **{p: site.local[s.origin] for p, s in d.repo.items()}} for h, d in site.desired.items()}


def copies(run: List[dict]) -> Tuple[Counter, Counter]:
    """(binary uploads per (host, path), repo uploads per host: files) from one run's journal entries."""
    binaries, repo = Counter(), Counter()
    for e in run:
        if e.get("event") == "step" and e.get("status") == "done":
            if e.get("kind") == "binary":
                binaries[(e["host"], e["target"])] += 1
            elif e.get("kind") == "repo":
                repo[e["host"]] += int(str(e.get("detail", "0")).split()[0])
    return binaries, repo


def check_once(files: Dict[str, Dict[str, Path]], run: List[dict]) -> List[str]:
    """What is wrong with the first apply's copies: a file not copied, copied twice, or one not asked for."""
    binaries, repo = copies(run)
    problems = []
    for h, paths in sorted(files.items()):
        bins = [p for p in paths if (h, p) in binaries or not p.startswith("/var/lib/k8s-offline/repo")]
        for p in bins:
            if binaries[(h, p)] != 1:
                problems.append(f"{h}: {p} copied {binaries[(h, p)]} times")
        n_repo = len(paths) - len(bins)
        if repo[h] != n_repo:
            problems.append(f"{h}: {repo[h]} repository files copied, {n_repo} wanted")
    known = {(h, p) for h, paths in files.items() for p in paths}
    problems += [f"{h}: {p} copied but not in the desired state" for h, p in binaries if (h, p) not in known]
    return problems


def scp(bed: Bed, files: Dict[str, Dict[str, Path]]) -> float:
    """Seconds for `scp` of each host's files to that host, every host at once (a fresh connection each)."""
    procs = []
    t = time.monotonic()
    for h in bed.tb.hosts:
        local = sorted({str(p) for p in files[h.name].values()})
        argv = ["scp", "-q", "-i", str(bed.tb.key_path), "-o", "StrictHostKeyChecking=no", "-o",
                "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
                *local, f"root@{h.address}:{SCP_DIR}/"]
        bed.tb.ssh(h.n, f"rm -rf {SCP_DIR} && mkdir -p {SCP_DIR}")
        procs.append((h, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    t = time.monotonic()  # the mkdirs are not the copy's
    for h, p in procs:
        _out, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise SystemExit(f"scp to {h.name} failed: {err[-1000:]}")
    took = time.monotonic() - t
    for h in bed.tb.hosts:
        bed.tb.ssh(h.n, f"rm -rf {SCP_DIR}")
    return took


def changed_byte_caught(bed: Bed, host: int, path: str) -> bool:
    """Change one byte of `path` in place on a host (same size, mtime put back); whether plan sees it."""
    stamp = bed.tb.ssh(host, f"stat -c %y {shlex.quote(path)}").stdout.strip()
    bed.tb.ssh(host, f"b=$(dd if={path} bs=1 skip=4096 count=1 2>/dev/null | od -An -tu1 | tr -d ' '); "
                     f"printf \"\\\\$(printf %o $(( (b + 1) % 256 )))\" | "
                     f"dd of={path} bs=1 seek=4096 count=1 conv=notrunc 2>/dev/null && touch -d {shlex.quote(stamp)} {path}")
    _t, out = bed.installer("plan", "--json")
    plan = json.loads(out)
    host_name = bed.tb.host(host).name
    return any(s.get("host") == host_name and s.get("kind") == "binary" and s.get("target") == path
               for s in _steps(plan))


def _steps(plan: dict) -> List[dict]:
    out = []
    for ph in plan.get("plan", plan).get("phases", []):
        for w in ph.get("waves", []):
            out += w.get("steps", [])
    return out


def release_part(bundle, work: Path, n: int) -> dict:
    print(f"release size: {n} hosts", flush=True)
    with Bed(n, bundle, work, "bapr", "198.18.250") as bed:
        load0 = load()
        wall = time.time()
        first = bed.apply()
        cpu1, busy1 = bed.cpu, bed.busy
        breakdown = phases(bed, bed.runs()[-1], wall)
        copy = copying(bed.runs()[-1])
        load1 = load()
        files = host_files(bed)
        nbytes = {h: sum(p.stat().st_size for p in f.values()) for h, f in files.items()}
        scp_after = scp(bed, files)
        problems = check_once(files, bed.runs()[-1])
        before = len(bed.runs())
        background = idle_load()
        again = bed.apply()
        cpu2, busy2 = bed.cpu, bed.busy
        load2 = load()
        # the first re-apply hashes every file once (the first apply's facts ran before they existed); from
        # the second on the hosts answer from their hash caches: that one is the steady state the goal is for
        steady = bed.apply()
        cpu3, busy3 = bed.cpu, bed.busy
        b2, r2 = copies([e for run in bed.runs()[before:] for e in run])  # an empty plan journals no run at all
        if b2 or r2:
            problems.append(f"the converged re-apply copied again: {sorted(b2)[:3]} {dict(r2)}")
        scp_second = scp(bed, files)
        node = 4 if n >= 4 else n
        target = "/usr/local/bin/kubelet"
        caught = changed_byte_caught(bed, node, target)
        if not caught:
            problems.append(f"a changed byte of {target} on h{node} was not seen by plan")
        cache_lines = bed.tb.ssh(node, "cat /var/lib/k8s-offline/facts/hashes 2>/dev/null | wc -l").stdout.strip()
    return {"hosts": n, "first": first, "again": again, "steady": steady, "cpu_steady": cpu3, "busy_steady": busy3,
            "scp": (scp_after + scp_second) / 2,
            "scp_runs": (scp_after, scp_second), "bytes": nbytes,
            "files": {h: len(f) for h, f in files.items()}, "problems": problems, "caught": caught,
            "node": node, "target": target, "cache_lines": cache_lines, "loads": (load0, load1, load2),
            "phases": breakdown, "copying": copy, "cpu": cpu1, "busy": busy1, "cpu_again": cpu2, "busy_again": busy2,
            "background": background}


# -- scale: 3, 12, 24 hosts ------------------------------------------------------------------------

def phases(bed: Bed, run: List[dict], started: float) -> List[Tuple[str, float]]:
    """(phase or stage, seconds of wall time) of one apply run from its journal (t is the wall clock)."""
    start = next((e["t"] for e in run if e.get("event") == "run-start"), None)
    done = next((e["t"] for e in run if e.get("event") in ("run-done", "run-failed")), None)
    out = []
    if start is not None:
        out.append(("load site, facts, plan", start - started))
    spans: Dict[str, List[float]] = {}
    for e in run:
        if e.get("event") == "step":
            s = spans.setdefault(e["phase"], [e["t"] - e.get("seconds", 0), e["t"]])
            s[0], s[1] = min(s[0], e["t"] - e.get("seconds", 0)), max(s[1], e["t"])
    out += [(p, b - a) for p, (a, b) in sorted(spans.items(), key=lambda kv: kv[1][0])]
    if done is not None:
        out.append(("checks, report", time.time() - done))
    return out


def copying(run: List[dict]) -> float:
    """Seconds the run spent writing files to hosts: per phase, the host that wrote longest (the union of its
    write steps' intervals: a batch journals each of its steps with the batch's time), summed over the phases."""
    spans: Dict[Tuple[str, str], List[Tuple[float, float]]] = {}
    for e in run:
        if e.get("event") == "step" and e.get("kind") in ("put", "binary", "repo"):
            spans.setdefault((e["phase"], e["host"]), []).append((e["t"] - e.get("seconds", 0), e["t"]))
    per_phase: Dict[str, float] = {}
    for (phase, _host), iv in spans.items():
        total, end = 0.0, float("-inf")
        for a, b in sorted(iv):
            if b > end:
                total += b - max(a, end)
                end = b
        per_phase[phase] = max(per_phase.get(phase, 0.0), total)
    return sum(per_phase.values())


def scale_part(bundle, work: Path, sizes: List[int]) -> dict:
    res = {}
    for i, n in enumerate(sizes):
        print(f"scale: {n} hosts", flush=True)
        try:
            res[n] = scale_one(n, bundle, work, f"198.18.{(240, 244, 236, 232)[i % 4]}")
        except (BenchFailed, RuntimeError) as e:  # RuntimeError: the testbed did not boot
            print(f"  FAILED: {e}", flush=True)
    return res


def scale_one(n: int, bundle, work: Path, net: str) -> dict:
    with Bed(n, bundle, work, f"bap{n}", net) as bed:
        wall = time.time()
        first = bed.apply()
        breakdown = phases(bed, bed.runs()[-1], wall)
        cpu, machine = bed.cpu, bed.busy
        load1 = load()
        background = idle_load()
        again = bed.apply()
        r = {"first": first, "again": again, "load": load1, "phases": breakdown, "cpu": cpu,
             "busy": machine, "cpu_again": bed.cpu, "busy_again": bed.busy, "background": background}
        print(f"  first {first:.1f} s (installer CPU {cpu:.1f} s, machine CPU {machine:.1f} s), converged "
              f"{again:.2f} s (installer CPU {bed.cpu:.1f} s; before it, {background:.2f} of the {os.cpu_count()} "
              f"cores were busy with nothing of the bench running) ({load1})", flush=True)
        print("  where the first apply went: " + ", ".join(f"{p} {t:.1f}s" for p, t in breakdown), flush=True)
        return r


def report(rel: Optional[dict], sc: Optional[dict]) -> bool:
    ok = True
    cpus = os.cpu_count()
    print(f"\ninstaller apply on booted test hosts (systemd-nspawn on this {cpus}-core machine; default --jobs)")
    if rel is not None:
        mib = 2 ** 20
        per_host = sorted(set(rel["bytes"].values()))
        total = sum(rel["bytes"].values())
        ratio = rel["first"] / rel["scp"]
        print(f"  release size, {rel['hosts']} hosts: {total / mib:.0f} MiB copied in all "
              f"({', '.join(f'{b / mib:.0f}' for b in per_host)} MiB per host)")
        print(f"    first apply {rel['first']:6.1f} s   scp of the same files to the same hosts "
              f"{rel['scp']:.1f} s (runs {rel['scp_runs'][0]:.1f}, {rel['scp_runs'][1]:.1f})   "
              f"ratio {ratio:.2f} (goal <= {SCP_GOAL}) {'ok' if ratio <= SCP_GOAL else 'MISSED'}")
        print(f"    of the first apply, writing files to the hosts took {rel['copying']:.1f} s "
              f"({rel['copying'] / rel['scp']:.2f}x scp); installer CPU {rel['cpu']:.0f} s, the machine's "
              f"{rel['busy']:.0f} s (hosts included)")
        print("    where it went: " + ", ".join(f"{p} {t:.1f}s" for p, t in rel["phases"]))
        print(f"    each file crossed to each host once (journal: binary and repo steps against the desired state): "
              f"{'yes' if not rel['problems'] else 'NO: ' + '; '.join(rel['problems'][:5])}")
        print(f"    converged re-apply {rel['steady']:.2f} s (goal <= {REAPPLY_6_GOAL} s) "
              f"{'ok' if rel['steady'] <= REAPPLY_6_GOAL else 'MISSED'}: the second after the first apply, the "
              f"hosts answering from their facts hash caches ({rel['cache_lines']} sums cached on h{rel['node']}); "
              f"installer CPU {rel['cpu_steady']:.1f} s, the machine's {rel['busy_steady']:.1f} s. The first one, "
              f"{rel['again']:.2f} s (installer CPU {rel['cpu_again']:.1f} s, the machine's "
              f"{rel['busy_again']:.1f} s), hashed every file once: the first apply's facts ran before the files "
              f"existed. Neither copied anything; before them {rel['background']:.2f} of the {os.cpu_count()} "
              f"cores were busy with nothing of the bench running")
        print(f"    one byte of {rel['target']} changed in place on h{rel['node']} (size and mtime kept; the "
              f"write moved its ctime): plan {'re-copies it' if rel['caught'] else 'DID NOT see it'}")
        print(f"    load average: before {rel['loads'][0]}, after first {rel['loads'][1]}, after converged "
              f"{rel['loads'][2]}")
        ok &= ratio <= SCP_GOAL and rel["steady"] <= REAPPLY_6_GOAL and not rel["problems"]
    if sc:
        sizes = sorted(sc)
        print("  scale (test-size stand-ins):")
        print("    (CPU: the installer's own and its ssh clients' on the control host / the whole machine's meanwhile,"
              " the hosts' included; seconds)")
        for n in sizes:
            r = sc[n]
            print(f"    {n:3d} hosts: first apply {r['first']:6.1f} s (CPU {r['cpu']:.0f} / {r['busy']:.0f})   "
                  f"converged {r['again']:5.2f} s (CPU {r['cpu_again']:.1f} / {r['busy_again']:.1f}; cores busy "
                  f"before it: {r['background']:.2f})   ({r['load']})")
        lo, hi = sizes[0], sizes[-1]
        ratio = sc[hi]["first"] / sc[lo]["first"]
        print(f"    T({hi})/T({lo}) first apply = {ratio:.2f} (goal <= {SCALE_GOAL}) "
              f"{'ok' if ratio <= SCALE_GOAL else 'MISSED'}; converged {hi} hosts {sc[hi]['again']:.2f} s "
              f"(goal <= {REAPPLY_24_GOAL} s) {'ok' if sc[hi]['again'] <= REAPPLY_24_GOAL else 'MISSED'}")
        print(f"    where the {hi}-host first apply went: " + ", ".join(f"{p} {s:.1f}s" for p, s in sc[hi]["phases"]))
        ok &= ratio <= SCALE_GOAL and sc[hi]["again"] <= REAPPLY_24_GOAL
    return ok


def bundle_for(work: Path, profile: str, keep: Optional[Path]):
    """The bundle of a stand-in profile: built here, or reused from --bundles DIR (built there the first time)."""
    from tests.e2e import cluster

    where = (keep or work) / f"bundle-{profile}"
    record = where / "built.json"
    if record.exists():
        r = json.loads(record.read_text())
        return cluster.BuiltBundle(Path(r["path"]), Path(r["pub"]), [Path(p) for p in r["base"]], r["seconds"])
    t = time.monotonic()
    b = cluster.build_bundle(where / "build", profile=profile)
    print(f"  {profile} bundle built in {time.monotonic() - t:.0f} s", flush=True)
    record.write_text(json.dumps({"path": str(b.path), "pub": str(b.pub), "base": [str(p) for p in b.base_rpms],
                                  "seconds": b.seconds}))
    return b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--release-hosts", type=int, default=6, help="hosts of the release-size run (0: skip it)")
    ap.add_argument("--scale", default="3,12,24", help="host counts of the scaling runs ('' : skip them)")
    ap.add_argument("--bundles", type=Path, help="keep the built bundles here and reuse them on the next run")
    ap.add_argument("--logs", type=Path, help="keep each installer run's output here")
    args = ap.parse_args(argv)
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
        LOGS[0] = args.logs
    sys.path.insert(0, str(ROOT))
    # the installer as users run it has its bytecode (pip install, the static build); this machine may set
    # PYTHONDONTWRITEBYTECODE, which would make every installer run compile its modules again
    for package in ("contract", "installer"):
        compileall.compile_dir(str(ROOT / package), quiet=1)
    sizes = [int(s) for s in args.scale.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp:
        work = Path(tmp)
        if args.bundles:
            args.bundles.mkdir(parents=True, exist_ok=True)
        rel = sc = None
        failed = False
        if args.release_hosts:
            try:
                rel = release_part(bundle_for(work, "release", args.bundles), work, args.release_hosts)
                report(rel, None)
            except (BenchFailed, RuntimeError) as e:
                print(f"  FAILED: {e}", flush=True)
                failed = True
        if sizes:
            sc = scale_part(bundle_for(work, "small", args.bundles), work, sizes)
        if sizes:
            failed |= len(sc) < len(sizes)
    print("\n=== summary")
    return 0 if report(rel, sc) and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
