"""etcd membership from the inventory, end to end on booted hosts: etcd moves from h1 to the node h4.

3 masters (etcd + lb) h1..h3 and a node h4 are applied; then one inventory edit takes h1 out of the etcd group
and puts h4 in it. The first apply adds h4 (a 4th member, behind the gates) and defers h1's removal; the second
removes h1 (member remove, etcd stopped there, its data moved aside). A continuous write/read probe through the
members that stay (h2, h3) never fails for longer than a leader election.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess

import pytest
import yaml

from installer.pki import Pki
from tests.e2e import cluster
from tests.e2e.outage import Sampler, longest_outage

pytestmark = pytest.mark.e2e
KUBECTL = "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.kubeconfig"


def _fail(run: cluster.Run) -> str:
    return f"rc={run.rc}\nstdout:\n{run.stdout[-3000:]}\nstderr:\n{run.stderr[-6000:]}"


def _members(ctl, endpoints) -> dict:
    """{name: status} from `etcdctl member list` (unstarted entries have no name: keyed by their peer URL)."""
    out = {}
    for ln in ctl("member", "list", endpoints=endpoints).stdout.splitlines():
        f = ln.split(", ")
        out[f[2] or f[3]] = f[1]
    return out


def test_etcd_moves_from_a_master_to_a_node_one_member_per_apply(testbed_factory, tmp_path_factory):
    tb = testbed_factory.create(4)
    work = tmp_path_factory.mktemp("membership")
    bundle = cluster.build_bundle(work / "build")
    cluster.register_base_rpms(tb, range(1, 5), bundle.base_rpms)
    reg = cluster.Registry(work / "registry", tb.control_address).start()
    try:
        inv1 = cluster.write_inventory(tb, work / "inventory.yaml", 4)
        doc = yaml.safe_load(inv1.read_text())
        doc["hosts"][0]["roles"] = ["master", "lb"]  # h1 leaves the etcd group
        doc["hosts"][3]["roles"] = ["node", "etcd"]  # h4 joins it
        inv2 = work / "inventory-moved.yaml"
        inv2.write_text(yaml.safe_dump(doc, sort_keys=False))
        state, known = work / "state", work / "known_hosts"

        def args(inv):
            return ["--bundle", str(bundle.path), "--pub", str(bundle.pub), "-i", str(inv), "--state", str(state),
                    "--known-hosts", str(known)]

        first = cluster.installer("apply", *args(inv1), timeout=1200)
        assert first.rc == 0, _fail(first)
        pki = Pki(state)
        tls = [f"--cacert={pki.crt_path('etcd-ca')}", f"--cert={pki.crt_path('etcd-admin')}",
               f"--key={pki.key_path('etcd-admin')}"]
        addrs = {n: tb.host(n).address for n in (1, 2, 3, 4)}

        def ctl(*a, endpoints=(2, 3)):
            eps = ",".join(f"https://{addrs[n]}:2379" for n in endpoints)
            return subprocess.run(["etcdctl", f"--endpoints={eps}", "--dial-timeout=2s", "--command-timeout=3s",
                                   *tls, *a], capture_output=True, text=True, timeout=20, check=False,
                                  env={"PATH": os.environ["PATH"], "ETCDCTL_API": "3"})

        assert _members(ctl, (1, 2, 3)) == {"h1": "started", "h2": "started", "h3": "started"}
        writes = itertools.count(1)

        def probe():
            i = str(next(writes))
            return ctl("put", "/probe/membership", i).returncode == 0 and \
                ctl("get", "/probe/membership", "--print-value-only").stdout.strip() == i

        started = {n: cluster.unit_invocation(tb, n, "etcd") for n in (2, 3)}
        with Sampler(probe) as sampler:
            plan = cluster.installer("plan", *args(inv2))
            assert plan.rc == 0, _fail(plan)
            assert "etcd member add h4: member add h4 --peer-urls=https://" in plan.stdout, plan.stdout
            assert "deferred: etcd membership: h1 leaves by the next apply" in plan.stdout, plan.stdout
            add = cluster.installer("apply", *args(inv2), timeout=1200)
            assert add.rc == 0, _fail(add)
            assert "etcd snapshot: " in add.stderr and "backups/etcd-" in add.stderr, add.stderr[-3000:]
            assert _members(ctl, (2, 3, 4)) == {f"h{n}": "started" for n in (1, 2, 3, 4)}
            # the members that stay got the new ETCD_INITIAL_CLUSTER without a restart (bootstrap-only setting)
            for n in (2, 3):
                assert f"h4=https://{addrs[4]}:2380" in tb.ssh(n, "cat /etc/etcd/etcd.conf").stdout
                assert cluster.unit_invocation(tb, n, "etcd") == started[n], f"h{n}'s etcd was restarted"
            recorded = json.loads((state / "etcd-members.json").read_text())["members"]
            assert recorded == {f"h{n}": addrs[n] for n in (1, 2, 3, 4)}, recorded
            remove = cluster.installer("apply", *args(inv2), timeout=1200)
            assert remove.rc == 0, _fail(remove)
            assert "etcd member remove h1" in remove.stderr and "its data moved to /var/lib/etcd.removed-" \
                in remove.stderr, remove.stderr[-4000:]
        worst, down_since = longest_outage(sampler.samples)
        assert sampler.samples and down_since is None and worst < 5.0, (worst, sampler.samples[-5:])
        assert _members(ctl, (2, 3, 4)) == {"h2": "started", "h3": "started", "h4": "started"}
        recorded = json.loads((state / "etcd-members.json").read_text())["members"]
        assert recorded == {f"h{n}": addrs[n] for n in (2, 3, 4)}, recorded
        r = ctl("get", "/probe/membership", "--print-value-only", endpoints=(4,))
        assert r.returncode == 0 and r.stdout.strip(), r.stderr  # h4 serves the data
        h1 = tb.ssh(1, "systemctl is-active etcd; systemctl is-enabled etcd; ls -d /var/lib/etcd.removed-*; "
                       "ls /var/lib/etcd.removed-*/member; test -e /var/lib/etcd || echo no-data-dir",
                    check=False).stdout.split()
        assert h1[:2] == ["inactive", "disabled"] and "no-data-dir" in h1 and "wal" in h1, h1
        for n in (1, 2, 3):  # every apiserver runs with the new member set
            cmdline = tb.ssh(n, "tr '\\0' ' ' < /proc/$(pgrep -o -f /usr/local/bin/kube-apiserver)/cmdline").stdout
            servers = next(a for a in cmdline.split() if a.startswith("--etcd-servers=")).split("=", 1)[1]
            assert sorted(servers.split(",")) == sorted(f"https://{addrs[m]}:2379" for m in (2, 3, 4)), cmdline
        flannel = tb.ssh(4, "cat /etc/sysconfig/flanneld").stdout
        assert addrs[4] + ":2379" in flannel and addrs[1] + ":2379" not in flannel, flannel
        nodes = tb.ssh(2, f"{KUBECTL} get nodes -o name", timeout=60)  # through the VIP
        assert nodes.returncode == 0 and "node/h4" in nodes.stdout, nodes.stderr
        check = cluster.installer("check", "-i", str(inv2), "--state", str(state), "--json", "--known-hosts",
                                  str(known))
        assert check.rc == 0, _fail(check)
        again = cluster.installer("apply", *args(inv2), timeout=1200)
        assert again.rc == 0 and "nothing to do" in again.stderr, _fail(again)
        print(f"\netcd h1 -> h4: {len(sampler.samples)} probes, longest failure {worst:.1f} s; applies: fresh "
              f"{first.seconds:.0f} s, add {add.seconds:.0f} s, remove {remove.seconds:.0f} s")
    finally:
        reg.stop()
