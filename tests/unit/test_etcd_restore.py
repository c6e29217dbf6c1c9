"""etcd restore: its plan, the snapshot check against the sidecar, and the order of what it does on the hosts."""

import hashlib
import json

import pytest
import yaml

from contract.errors import Error
from installer import checks as checks_mod
from installer import etcd_restore as er
from installer import inventory as inventory_mod
from installer.hosts.connector import Result

INV = {"cluster": {"name": "t", "vip": "198.18.0.100"},
       "registry": {"mode": "external", "hostname": "reg.test", "address": "198.18.0.1", "port": 5000,
                    "insecure": True},
       "hosts": [{"name": f"h{i}", "address": f"198.18.0.1{i}", "roles": ["master", "etcd", "lb"]} for i in (1, 2, 3)]
       + [{"name": "h4", "address": "198.18.0.14", "roles": ["node"]}]}


@pytest.fixture
def inv(tmp_path):
    p = tmp_path / "inv.yaml"
    p.write_text(yaml.safe_dump(INV))
    return inventory_mod.load(p)


@pytest.fixture
def snap(tmp_path):
    f = tmp_path / "etcd-20261203T070000Z-42.db"
    f.write_bytes(b"snapshot bytes")
    (tmp_path / (f.name + ".json")).write_text(json.dumps({"sha256": hashlib.sha256(b"snapshot bytes").hexdigest()}))
    return f


def test_plan_names_every_member_its_data_dir_and_peer_url(inv, snap):
    members = er.plan(inv, snap)
    assert [(m.host.name, m.name, m.data_dir, m.peer_url) for m in members] == [
        (f"h{i}", f"h{i}", "/var/lib/etcd", f"https://198.18.0.1{i}:2380") for i in (1, 2, 3)]
    text = "\n".join(er.plan_lines(inv, snap, members))
    assert "stop kube-apiserver on h1, h2, h3" in text and "move /var/lib/etcd aside" in text


def test_a_missing_or_damaged_snapshot_is_refused(inv, snap, tmp_path):
    with pytest.raises(Error) as e:
        er.plan(inv, tmp_path / "nope.db")
    assert "no such snapshot" in e.value.message
    snap.write_bytes(b"other bytes")
    with pytest.raises(Error) as e:
        er.verify_snapshot(snap)
    assert "sidecar" in e.value.message


class Conn:
    def __init__(self, name, log, digest):
        self.name, self.log, self.digest = name, log, digest

    def run(self, cmd, **kw):
        text = cmd if isinstance(cmd, str) else " ".join(cmd)
        self.log.append((self.name, text))
        return Result(0, f"{self.digest}  x\n" if text.startswith("sha256sum") else "", "")

    def put_file(self, path, local, mode):
        self.log.append((self.name, f"put {path}"))

    def close(self):
        pass


def test_restore_stops_restores_everywhere_then_starts_in_order(inv, snap, monkeypatch):
    log = []
    digest = hashlib.sha256(b"snapshot bytes").hexdigest()
    monkeypatch.setattr(checks_mod, "etcd_health", lambda inv, pki, s: [
        checks_mod.Result("etcd health", m.name, True, "healthy") for m in inv.etcd_members])
    monkeypatch.setattr(checks_mod, "put_flannel_config", lambda inv, pki, s, v: log.append(("control", "flannel")))
    monkeypatch.setattr(checks_mod, "apiserver_healthz", lambda *a: (True, "ok"))
    d = er.restore(inv, None, snap, er.plan(inv, snap), None, lambda i, h: Conn(h.name, log, digest), lambda s: None)
    assert d["cluster_token"].startswith("t-etcd-restore-")

    def first(pred):
        return next(i for i, (h, c) in enumerate(log) if pred(h, c))

    last_stop = max(i for i, (h, c) in enumerate(log) if c == "systemctl stop etcd")
    assert max(i for i, (h, c) in enumerate(log) if c == "systemctl stop kube-apiserver") < first(
        lambda h, c: c == "systemctl stop etcd")
    assert last_stop < first(lambda h, c: c.startswith("put "))
    restores = [c for h, c in log if "snapshot restore" in c]
    assert len(restores) == 3 and all("--initial-cluster h1=https://198.18.0.11:2380,h2=" in c for c in restores)
    assert max(i for i, (h, c) in enumerate(log) if "snapshot restore" in c) < first(lambda h, c: "start etcd" in c)
    assert first(lambda h, c: h == "control") < first(lambda h, c: c == "systemctl restart flanneld")
    assert {h for h, c in log if c == "systemctl restart flanneld"} == {"h1", "h2", "h3", "h4"}
    assert first(lambda h, c: c == "systemctl restart flanneld") < first(lambda h, c: "start kube-apiserver" in c)
    assert all("mv /var/lib/etcd /var/lib/etcd.before-restore-" in c for h, c in log if c.startswith("if [ -e"))


def test_restore_handles_at_most_max_parallel_hosts_at_once(inv, snap, monkeypatch):
    digest = hashlib.sha256(b"snapshot bytes").hexdigest()
    monkeypatch.setattr(checks_mod, "etcd_health", lambda inv, pki, s: [
        checks_mod.Result("etcd health", m.name, True, "healthy") for m in inv.etcd_members])
    monkeypatch.setattr(checks_mod, "put_flannel_config", lambda *a: None)
    monkeypatch.setattr(checks_mod, "apiserver_healthz", lambda *a: (True, "ok"))
    widths = []
    real_run_on = er.run_on
    monkeypatch.setattr(er, "run_on", lambda hosts, fn, max_parallel: widths.append(max_parallel)
                        or real_run_on(hosts, fn, max_parallel))
    er.restore(inv, None, snap, er.plan(inv, snap), None, lambda i, h: Conn(h.name, [], digest), lambda s: None,
               max_parallel=2)
    assert widths == [2] * 6  # stop apiservers, stop etcd, restore, start etcd, restart flanneld, start apiservers
