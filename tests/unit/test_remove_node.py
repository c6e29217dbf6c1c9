"""remove-node: refusals before anything happens, what a removal covers, draining, cleaning, forgetting."""

import json

import pytest
import yaml

from contract.errors import Error
from installer import inventory as inventory_mod
from installer import remove_node as rn
from installer.hosts.connector import Result
from installer.pki import Pki
from installer.state import StateDir

HOSTS = [{"name": f"h{i}", "address": f"198.18.0.1{i}", "roles": ["master", "etcd", "lb"]} for i in (1, 2, 3)] + [
    {"name": "h4", "address": "198.18.0.14", "roles": ["node"]},
    {"name": "h5", "address": "198.18.0.15", "roles": ["node"]}]


def inv_without(tmp_path, *names):
    doc = {"cluster": {"name": "t", "vip": "198.18.0.100"},
           "registry": {"mode": "external", "hostname": "reg.test", "address": "198.18.0.1", "port": 5000,
                        "insecure": True},
           "hosts": [h for h in HOSTS if h["name"] not in names]}
    p = tmp_path / f"inv-{'-'.join(names) or 'all'}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return inventory_mod.load(p)


@pytest.fixture
def site(tmp_path):
    full = inv_without(tmp_path)
    st = StateDir(tmp_path / "state").ensure()
    st.set_hosts({h.name: h.model_dump(mode="json", exclude_none=True) for h in full.hosts})
    st.set_etcd_members({f"h{i}": f"198.18.0.1{i}" for i in (1, 2, 3)})
    pki = Pki(st.root)
    pki.ensure(full)
    return tmp_path, st, pki


def test_a_node_gone_from_the_inventory_is_planned_with_everything_the_installer_put_there(site):
    tmp, st, pki = site
    [rm] = rn.plan(inv_without(tmp, "h5"), st, pki, ["h5"], keep_data=False)
    assert rm.host.address == "198.18.0.15"
    assert rm.units[:2] == ["kube-proxy", "kubelet"] and "docker" in rm.units and "flanneld" in rm.units
    for path in ("/usr/local/bin/kubelet", "/etc/kubernetes/kubelet", "/etc/cni/net.d/10-flannel.conflist",
                 "/etc/kubernetes/pki/kubelet.key", "/etc/docker/daemon.json"):
        assert path in rm.files, path
    assert "/etc/hosts" not in rm.files
    assert "/data/docker" not in rm.wipe and rm.wipe[-1] == "/var/lib/docker"
    assert "/var/lib/docker" not in rn.plan(inv_without(tmp, "h5"), st, pki, ["h5"], keep_data=True)[0].wipe
    assert any("drain" in ln for ln in rm.plan_lines())


@pytest.mark.parametrize("gone,name,words", [
    ((), "h5", "still in the inventory"),
    (("h9",), "h9", "not a host this state directory knows"),
    (("e9",), "e9", "etcd member"),  # recorded with the etcd role, no longer in the inventory
])
def test_refusals_name_the_host_and_change_nothing(site, gone, name, words):
    tmp, st, pki = site
    hosts = st.hosts()
    hosts["e9"] = {"name": "e9", "address": "198.18.0.19", "roles": ["etcd", "node"]}
    st.set_hosts(hosts)
    before = (st.root / "hosts.json").read_bytes()
    with pytest.raises(Error) as e:
        rn.plan(inv_without(tmp, *gone), st, pki, [name], keep_data=False)
    assert name in e.value.message and words in e.value.message and e.value.hint
    assert (st.root / "hosts.json").read_bytes() == before


def test_the_last_master_cannot_leave_the_inventory(tmp_path):
    """An inventory without a master does not validate, so the last master is never removed (remove-node
    refuses one still in the inventory)."""
    with pytest.raises(Error) as e:
        inv_without(tmp_path, "h1", "h2", "h3")
    assert any("no host has the role 'master'" in d for d in e.value.details)


class FakeApi:
    def __init__(self, pods):
        self.pods = list(pods)
        self.calls = []

    def call(self, method, path, **kw):
        self.calls.append((method, path, kw.get("data")))
        if method == "DELETE" and "/pods/" in path:
            self.pods = [p for p in self.pods if not path.endswith("/" + p["metadata"]["name"])]

    def pods_on(self, node):
        return list(self.pods)


def test_drain_cordons_then_deletes_every_pod_and_waits_for_them():
    api = FakeApi([{"metadata": {"namespace": "default", "name": "web"}},
                   {"metadata": {"namespace": "kube-system", "name": "dns"}}])
    assert rn.drain(api, "h5", lambda s: None, iter(range(100)).__next__) == "cordoned, 2 pod(s) deleted"
    assert api.calls[0][:2] == ("PATCH", "/api/v1/nodes/h5")
    assert json.loads(api.calls[0][2]) == {"spec": {"unschedulable": True}}
    assert [c[1] for c in api.calls[1:]] == ["/api/v1/namespaces/default/pods/web",
                                             "/api/v1/namespaces/kube-system/pods/dns"]


def test_a_pod_that_does_not_go_stops_the_removal_before_the_host_is_touched():
    class Stuck(FakeApi):
        def call(self, method, path, **kw):
            self.calls.append((method, path, None))

    ticks = iter(range(0, 1000, 30))
    with pytest.raises(Error) as e:
        rn.drain(Stuck([{"metadata": {"namespace": "default", "name": "web"}}]), "h5", lambda s: None,
                 ticks.__next__)
    assert "still there" in e.value.message and e.value.details == ["default/web"]


class FakeConn:
    def __init__(self, rc=0):
        self.rc, self.commands = rc, []

    def run(self, cmd, **kw):
        self.commands.append(cmd)
        return Result(self.rc, "", "kubelet still active\n" if self.rc else "")

    def close(self):
        pass


def test_clean_host_stops_disables_and_removes_in_one_command(site):
    tmp, st, pki = site
    [rm] = rn.plan(inv_without(tmp, "h5"), st, pki, ["h5"], keep_data=False)
    c = FakeConn()
    assert "unit(s) stopped" in rn.clean_host(c, rm)
    [cmd] = c.commands
    assert cmd.startswith("systemctl disable --now kube-proxy kubelet")
    assert "/usr/local/bin/kubelet" in cmd and "/var/lib/docker" in cmd and "ip link del flannel.1" in cmd
    with pytest.raises(Error) as e:
        rn.clean_host(FakeConn(rc=3), rm)
    assert "h5" in e.value.message and e.value.details == ["kubelet still active"]


def test_forget_drops_the_record_pending_and_known_hosts_entry(site, tmp_path):
    _, st, _ = site
    st.pending.add("h5", ["kubelet"])
    kh = tmp_path / "known_hosts"
    kh.write_text("198.18.0.15 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh0ZXN0a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5\n"
                  "198.18.0.14 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh0ZXN0a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5\n")
    rn.forget(st, "h5", "198.18.0.15", kh)
    assert "h5" not in st.hosts() and "h4" in st.hosts()
    assert "h5" not in st.pending.load()
    assert "198.18.0.15" not in kh.read_text() and "198.18.0.14" in kh.read_text()


def test_a_damaged_host_record_is_an_error_not_an_empty_one(site):
    _, st, _ = site
    (st.root / "hosts.json").write_text('{"hosts": {"h5": "nope"}}')
    with pytest.raises(Error) as e:
        st.hosts()
    assert "hosts.json" in e.value.message and "remove-node" in e.value.hint
