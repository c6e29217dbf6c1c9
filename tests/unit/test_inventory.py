"""Inventory model: the example is valid; bad inventories fail with located errors and hints."""

import textwrap
from pathlib import Path

import pydantic
import pytest
import yaml

from contract.errors import ValidationError
from installer import inventory as inv_mod

ROOT = Path(__file__).resolve().parents[2]


def load_with(tmp_path, mutate):
    data = yaml.safe_load((ROOT / "inventory.example.yaml").read_text())
    mutate(data)
    p = tmp_path / "inv.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return inv_mod.load(p)


def problems(tmp_path, mutate):
    with pytest.raises(ValidationError) as e:
        load_with(tmp_path, mutate)
    assert e.value.exit_code == 2
    return e.value.details


def test_example_is_valid():
    inv = inv_mod.load(ROOT / "inventory.example.yaml")
    assert [h.name for h in inv.masters] == ["k8s-master1", "k8s-master2", "k8s-master3"]
    assert len(inv.etcd_members) == 3 and len(inv.lbs) == 3 and len(inv.nodes) == 2
    assert inv.cluster.kubernetes_service_ip == "10.254.0.1" and inv.cluster.dns_ip == "10.254.0.10"
    assert inv.registry.project == "kubernetes" and inv.registry.public
    with pytest.raises(pydantic.ValidationError):
        inv.cluster.vip = "1.2.3.4"  # frozen


def test_duplicate_ip_and_name(tmp_path):
    def m(d):
        d["hosts"][1]["address"] = d["hosts"][0]["address"]
        d["hosts"][4]["name"] = d["hosts"][3]["name"]
    d = problems(tmp_path, m)
    assert any(x.startswith("hosts[1].address") and "duplicate address" in x for x in d)
    assert any(x.startswith("hosts[4].name") and "duplicate host name" in x for x in d)


def test_vip_in_service_range_or_equal_to_host(tmp_path):
    d = problems(tmp_path, lambda d: d["cluster"].update(vip="10.254.3.3"))
    assert any(x.startswith("cluster.vip") and "inside cluster.service_cidr" in x for x in d)
    d = problems(tmp_path, lambda d: d["cluster"].update(vip=d["hosts"][0]["address"]))
    assert any("is the VIP" in x for x in d)


def test_even_etcd_and_missing_roles(tmp_path):
    def m(d):
        d["hosts"][2]["roles"] = ["master", "lb"]
    d = problems(tmp_path, m)
    assert any("2 etcd members" in x and "hint: use 1, 3 or 5" in x for x in d)

    def no_nodes(d):
        d["hosts"] = d["hosts"][:3]
    d = problems(tmp_path, no_nodes)
    assert any("no host has the role 'node'" in x for x in d)


def test_field_errors_all_at_once(tmp_path):
    def m(d):
        d["hosts"][0]["address"] = "192.168.10.300"
        d["hosts"][1]["roles"] = ["master", "worker"]
        d["hosts"][2]["name"] = "Bad_Name"
        d["cluster"]["pod_cidr"] = "172.30.0.1/16"
        d["registry"]["projet"] = "x"
    d = problems(tmp_path, m)
    assert len(d) >= 5, d
    assert any(x.startswith("hosts[0].address (line") for x in d)
    assert any(x.startswith("hosts[1].roles[1]") for x in d)
    assert any(x.startswith("hosts[2].name") for x in d)
    assert any(x.startswith("cluster.pod_cidr") for x in d)
    assert any(x.startswith("registry.projet") and "did you mean 'project'" in x for x in d)


def test_line_numbers_point_into_the_file(tmp_path):
    p = tmp_path / "inv.yaml"
    p.write_text(textwrap.dedent("""\
        cluster: {vip: 192.168.1.100}
        registry: {hostname: reg.local, address: 192.168.1.5}
        hosts:
          - {name: m1, address: 192.168.1.11, roles: [master, etcd, lb, node]}
          - {name: m2, address: 192.168.1.11, roles: []}
        """))
    with pytest.raises(ValidationError) as e:
        inv_mod.load(p)
    assert any(x.startswith("hosts[1].roles (line 5)") for x in e.value.details), e.value.details


@pytest.mark.parametrize("bip, where", [
    ("172.30.0.1/24", "cluster.pod_cidr"),          # the example's pod range: the two-routes design error
    ("10.254.3.1/24", "cluster.service_cidr"),
    ("192.168.10.1/16", "the hosts' network"),
])
def test_docker_bip_must_overlap_no_pod_service_or_host_network(tmp_path, bip, where):
    details = problems(tmp_path, lambda d: d["cluster"].update(docker_bip=bip))
    assert any(d.startswith("cluster.docker_bip") and where in d and "two ways" in d for d in details), details


@pytest.mark.parametrize("bip", ["172.17.0.0/16", "not-an-ip", "172.17.0.1/31", "fe80::1/64"])
def test_docker_bip_is_a_host_address_with_prefix(tmp_path, bip):
    details = problems(tmp_path, lambda d: d["cluster"].update(docker_bip=bip))
    assert any(d.startswith("cluster.docker_bip") for d in details), details


def test_docker_bip_default_and_custom(tmp_path):
    assert inv_mod.load(ROOT / "inventory.example.yaml").cluster.docker_bip == "172.17.0.1/16"
    inv = load_with(tmp_path, lambda d: d["cluster"].update(docker_bip="198.19.7.193/26"))
    assert inv.cluster.docker_bip == "198.19.7.193/26"


@pytest.mark.parametrize("name", ["root", "etcd-admin", "kube-apiserver-etcd-client"])
def test_an_etcd_host_may_not_carry_the_name_of_an_etcd_user(tmp_path, name):
    # a member's server certificate carries its host's name; etcd 3.3 < 3.3.11's gateway acts as that CN
    d = problems(tmp_path, lambda d: d["hosts"][0].update(name=name))
    assert any(x.startswith("hosts[0].name") and "name of an etcd user" in x and "rename the host" in x for x in d)
