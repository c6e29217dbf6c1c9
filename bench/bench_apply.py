"""First `installer apply` on 3 and on 6 booted test hosts (ratio; goal <= 1.3), a converged re-apply on 6, and
the time of `installer check` (with the pod network and pull checks) on 3 and 6.

Hosts are systemd-nspawn containers (tests/e2e/testbed.py); the bundle is built once from the stand-in
upstreams. Needs root. Prints the times and the ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
APPLY_GOAL = 1.3
REAPPLY_GOAL = 5.0


def inventory(tb, path: Path, n: int) -> Path:
    """3 masters (etcd + lb); with 3 hosts the third is also the node, with 6 hosts h4-h6 are nodes."""
    from tests.e2e import cluster

    hosts = []
    for i in range(1, n + 1):
        roles = ["master", "etcd", "lb"] if i <= 3 else ["node"]
        if n == 3 and i == 3:
            roles.append("node")
        h = tb.host(i)
        hosts.append({"name": h.name, "address": h.address, "roles": roles})
    path.write_text(yaml.safe_dump({
        "cluster": {"name": "bench", "vip": tb.vip, "interface": "eth0", **cluster.e2e_networks(tb)},
        "ssh": {"user": "root", "key": str(tb.key_path), "connect_timeout": 3},
        "registry": {"mode": "external", "hostname": "registry.bench.test", "address": tb.control_address,
                     "port": cluster.REGISTRY_PORT, "insecure": True, "project": "kubernetes"},
        "hosts": hosts,
    }, sort_keys=False))
    return path


def timed_apply(bundle, inv: Path, state: Path, known_hosts: Path) -> float:
    from tests.e2e import cluster

    t = time.monotonic()
    r = cluster.installer("apply", "-b", str(bundle.path), "--pub", str(bundle.pub), "-i", str(inv),
                          "--state", str(state), "--known-hosts", str(known_hosts))
    took = time.monotonic() - t
    if r.rc != 0:
        raise SystemExit(f"apply failed (rc {r.rc}):\n{r.stderr[-3000:]}")
    return took


def one(n: int, bundle, work: Path, prefix: str, net: str, reapply: bool) -> dict:
    from tests.e2e import cluster
    from tests.e2e.testbed import Testbed

    tb = Testbed(prefix=prefix, net=net, n_hosts=n)
    reg = None
    try:
        tb.up()
        cluster.register_base_rpms(tb, range(1, n + 1), bundle.base_rpms)
        reg = cluster.Registry(work / f"registry-{n}", tb.control_address).start()
        inv = inventory(tb, work / f"inventory-{n}.yaml", n)
        state = work / f"state-{n}"
        first = timed_apply(bundle, inv, state, work / f"known_hosts-{n}")
        again = timed_apply(bundle, inv, state, work / f"known_hosts-{n}") if reapply else None
        t = time.monotonic()
        r = cluster.installer("check", "-i", str(inv), "--state", str(state), "--known-hosts",
                              str(work / f"known_hosts-{n}"))
        check = time.monotonic() - t
        if r.rc != 0:
            raise SystemExit(f"check failed (rc {r.rc}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        return {"hosts": n, "first": first, "again": again, "check": check}
    finally:
        if reg is not None:
            reg.stop()
        tb.down()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.e2e import cluster

    with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp:
        work = Path(tmp)
        bundle = cluster.build_bundle(work / "build")
        r3 = one(3, bundle, work, "bap3", "198.18.251", reapply=False)
        r6 = one(6, bundle, work, "bap6", "198.18.252", reapply=True)
    ratio = r6["first"] / r3["first"]
    print("installer apply on booted test hosts (bundle built once from the stand-ins)")
    print(f"  first apply, 3 hosts: {r3['first']:6.1f} s")
    print(f"  first apply, 6 hosts: {r6['first']:6.1f} s   ratio 6/3 = {ratio:.2f} (goal <= {APPLY_GOAL})")
    print(f"  converged re-apply, 6 hosts: {r6['again']:.2f} s (goal < {REAPPLY_GOAL} s)")
    print(f"  installer check (incl. pod network probes + pulls), 3 hosts: {r3['check']:.2f} s, "
          f"6 hosts: {r6['check']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
