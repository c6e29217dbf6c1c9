"""Inventory checks beyond the fields: ssh keys must be readable files here; no two networks may overlap."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from contract.errors import ValidationError
from installer import inventory as inv_mod

ROOT = Path(__file__).resolve().parents[2]


def example() -> dict:
    return yaml.safe_load((ROOT / "inventory.example.yaml").read_text())


def write(tmp_path: Path, data: dict, name: str = "inv.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def problems(path: Path) -> list:
    with pytest.raises(ValidationError) as e:
        inv_mod.load(path)
    assert e.value.exit_code == 2
    return e.value.details


# ------------------------------------------------------------------ ssh keys

def test_missing_keys_are_named_by_yaml_path_everywhere(tmp_path):
    d = example()
    d["ssh"]["key"] = str(tmp_path / "nope")
    d["hosts"][2]["ssh"] = {"user": "deploy", "key": str(tmp_path / "nope2")}
    d["registry"]["ssh"] = {"key": str(tmp_path)}  # a directory
    found = problems(write(tmp_path, d))
    assert len(found) == 3, found
    by_path = {x.split(" (line")[0]: x for x in found}
    assert set(by_path) == {"ssh.key", "hosts[2].ssh.key", "registry.ssh.key"}, found
    assert f"cannot read {tmp_path / 'nope'}: No such file or directory" in by_path["ssh.key"]
    assert f"cannot read {tmp_path / 'nope2'}" in by_path["hosts[2].ssh.key"]
    assert f"{tmp_path} is not a regular file" in by_path["registry.ssh.key"]
    assert all("ssh-agent" in x for x in found)


def test_a_readable_key_validates_and_no_key_means_agent(tmp_path):
    key = tmp_path / "id_k8s"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    d = example()
    d["ssh"]["key"] = str(key)
    assert inv_mod.load(write(tmp_path, d)).ssh.key == str(key)
    d["ssh"].pop("key")
    assert inv_mod.load(write(tmp_path, d)).ssh.key is None


def test_tilde_expands_to_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    d = example()
    d["ssh"]["key"] = "~/.ssh/id_k8s"
    p = write(tmp_path, d)
    found = problems(p)
    assert any(x.startswith("ssh.key") and str(tmp_path / ".ssh/id_k8s") in x for x in found), found
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh/id_k8s").write_text("k\n")
    assert inv_mod.load(p).ssh.key == "~/.ssh/id_k8s"


def test_relative_key_is_taken_from_the_current_directory_as_ssh_does(tmp_path, monkeypatch):
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "id_k8s").write_text("k\n")  # beside the inventory: not where ssh -i would look
    d = example()
    d["ssh"]["key"] = "id_k8s"
    p = write(tmp_path / "inv", d)
    monkeypatch.chdir(tmp_path)
    assert any(x.startswith("ssh.key") for x in problems(p))
    monkeypatch.chdir(tmp_path / "inv")
    assert inv_mod.load(p).ssh.key == "id_k8s"


def test_every_command_refuses_before_writing_anything(tmp_path):
    d = example()
    d["ssh"]["key"] = str(tmp_path / "nope")
    p = write(tmp_path, d)
    state, out = tmp_path / "state", tmp_path / "out"
    for argv in (["validate", str(p)], ["render", "-i", str(p), "--out", str(out), "--state", str(state)],
                 ["certs", "check", "-i", str(p), "--state", str(state)]):
        r = subprocess.run([sys.executable, "-m", "installer.cli", *argv], capture_output=True, text=True,
                           cwd=ROOT, check=False)
        assert r.returncode == 2, (argv, r.stderr)
        assert "ssh.key (line" in r.stderr and "Traceback" not in r.stderr
    assert not state.exists() and not out.exists()


# ------------------------------------------------------------------ networks

def hosts_on(d: dict, prefix: str) -> dict:
    """The example moved onto prefix.0/24 (hosts, VIP and registry)."""
    d["cluster"]["vip"] = f"{prefix}.100"
    d["registry"]["address"] = f"{prefix}.20"
    for i, h in enumerate(d["hosts"]):
        h["address"] = f"{prefix}.{11 + i}"
    return d


def test_pod_range_inside_the_hosts_network_without_a_host_address_is_refused(tmp_path):
    d = hosts_on(example(), "198.18.240")
    d["cluster"]["pod_cidr"] = "198.18.240.128/25"
    d["cluster"]["pod_subnet_len"] = 28
    found = problems(write(tmp_path, d))
    assert len(found) == 1 and found[0].startswith("cluster.pod_cidr (line "), found
    assert found[0].split(": ", 1)[1] == (
        "cluster.pod_cidr 198.18.240.128/25 overlaps the hosts' network (vip/vip_prefix) 198.18.240.0/24 "
        "(hint: choose a pod range disjoint from the service range and the hosts' network: otherwise a node "
        "routes that range two ways)")


def test_service_range_overlapping_the_hosts_network_is_refused(tmp_path):
    d = hosts_on(example(), "10.254.200")  # inside the example's service range 10.254.0.0/16
    d["cluster"]["service_cidr"] = "10.254.0.0/16"
    found = problems(write(tmp_path, d))
    assert any(x.startswith("cluster.service_cidr") and "overlaps the hosts' network" in x for x in found), found
    d = hosts_on(example(), "198.18.240")
    d["cluster"]["service_cidr"] = "198.18.0.0/16"  # around the hosts' /24: reported as a range, not only per host
    found = problems(write(tmp_path, d))
    assert any(x.startswith("cluster.service_cidr") and "overlaps the hosts' network" in x for x in found), found


def test_pod_and_service_ranges_overlapping_each_other(tmp_path):
    d = example()
    d["cluster"]["service_cidr"] = "172.30.128.0/24"
    found = problems(write(tmp_path, d))
    assert any(x.startswith("cluster.pod_cidr") and "overlaps cluster.service_cidr 172.30.128.0/24" in x
               for x in found), found


def test_registry_address_inside_the_pod_range(tmp_path):
    d = example()
    d["registry"]["address"] = "172.30.5.5"
    found = problems(write(tmp_path, d))
    assert any(x.startswith("registry.address") and "lies inside cluster.pod_cidr" in x for x in found), found


def test_a_node_outside_the_vip_network_may_not_sit_in_a_cluster_range(tmp_path):
    d = example()
    d["hosts"][4]["address"] = "10.254.9.9"
    found = problems(write(tmp_path, d))
    assert found == [x for x in found if x.startswith("hosts[4].address")] and len(found) == 1, found
    assert "lies inside cluster.service_cidr 10.254.0.0/16" in found[0]


def test_disjoint_networks_validate(tmp_path):
    d = hosts_on(example(), "198.18.240")
    d["cluster"].update(pod_cidr="198.19.240.0/25", pod_subnet_len=28, service_cidr="198.19.240.128/26",
                        docker_bip="198.19.240.193/26")
    assert inv_mod.load(write(tmp_path, d)).cluster.pod_cidr == "198.19.240.0/25"


def test_the_e2e_inventories_still_validate(tmp_path):
    from tests.e2e import cluster

    key = tmp_path / "id_ed25519"
    key.write_text("k\n")
    for slot in (0, 7, 255):
        net = f"198.18.{slot}"
        tb = SimpleNamespace(net=net, vip=f"{net}.100", control_address=f"{net}.1", key_path=key,
                             host=lambda n, net=net: SimpleNamespace(name=f"h{n}", address=f"{net}.{10 + n}"))
        assert len(inv_mod.load(cluster.write_inventory(tb, tmp_path / "e2e.yaml", 6)).hosts) == 6
        inv = inv_mod.load(cluster.write_harbor_inventory(tb, tmp_path / "harbor.yaml"))
        assert inv.registry.mode == "install"
