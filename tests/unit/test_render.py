"""Rendering: files by role, flags that exist in 1.10.3, the values that matter, and the golden tree."""

from __future__ import annotations

import configparser
import datetime as dt
import difflib
import ipaddress
import json
import os
import re
import shutil
import stat
from pathlib import Path

import jinja2
import pytest

from installer import inventory, kubeconfig, pki, pki_material, render
from installer.render import File

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "example"
FLAGS = ROOT / "tests" / "fixtures" / "standins" / "flags"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
IMAGES = {"pause": "harbor.example.com/kubernetes/pause-amd64:3.1"}


@pytest.fixture(scope="module")
def inv():
    return inventory.load(GOLDEN / "inventory.yaml")


@pytest.fixture(scope="module")
def material(tmp_path_factory, inv):
    p = pki.Pki(tmp_path_factory.mktemp("state"), clock=lambda: T0)
    p.ensure(inv)
    return {h.name: pki_material.material_for(p, inv, h) for h in inv.hosts}


@pytest.fixture(scope="module")
def rendered(inv, material):
    return render.render_all(inv, pki_files=material, images=IMAGES, repo_url="http://192.168.10.1:8080/repo")


def text(rendered, host, path):
    return rendered[host][path].content.decode()


def args(rendered, host, path, var):
    return render.parse_env_file(text(rendered, host, path))[var].split()


# ------------------------------------------------------------------ files by role

def inv_host(files):
    return next(h for h in inventory.load(GOLDEN / "inventory.yaml").hosts if h.has("master"))


def test_files_follow_roles(rendered):
    m1, n1 = rendered["k8s-master1"], rendered["k8s-node1"]
    for p in ("/etc/etcd/etcd.conf", "/etc/kubernetes/apiserver", "/etc/haproxy/haproxy.cfg",
              "/etc/keepalived/keepalived.conf", "/etc/systemd/system/kube-apiserver.service"):
        assert p in m1 and p not in n1
    for p in ("/etc/kubernetes/kubelet", "/etc/systemd/system/kubelet.service",
              "/etc/docker/daemon.json", "/etc/cni/net.d/10-flannel.conflist",
              "/etc/systemd/system/docker.service.d/10-k8s.conf"):
        assert p in n1 and p not in m1  # masters here are not nodes: no kubelet, docker, CNI
    for p in ("/etc/sysconfig/flanneld", "/etc/systemd/system/flanneld.service",
              "/etc/kubernetes/pki/flanneld-etcd-client.crt"):
        assert p in n1 and p in m1  # flanneld on masters too: the apiserver reaches pod IPs
    assert "/usr/local/bin/flanneld" in render.binaries_for(inv_host(m1))
    for host in rendered.values():
        for p in ("/etc/hosts", "/etc/sysctl.d/k8s.conf", "/etc/yum.repos.d/k8s-offline.repo"):
            assert p in host


def test_a_master_that_is_also_a_node_gets_both(inv, material):
    h = inv.hosts[0].model_copy(update={"roles": ("master", "etcd", "lb", "node")})
    inv2 = inv.model_copy(update={"hosts": (h,) + inv.hosts[1:]})
    files = render.render_host(inv2, h, pki_files={})
    assert "/etc/kubernetes/apiserver" in files and "/etc/kubernetes/kubelet" in files


def test_pki_files_are_merged_with_their_modes(rendered):
    f = rendered["k8s-master1"]["/etc/kubernetes/pki/apiserver.key"]
    assert f.mode == 0o600 and f.content.startswith(b"-----BEGIN RSA PRIVATE KEY")


# ------------------------------------------------------------------ flags

def flag_table(name):
    path = FLAGS / name
    if not path.exists():
        pytest.skip(f"{path} not present (written by the stand-ins helper)")
    names = set()
    for line in path.read_text().splitlines():
        first = line.split("\t", 1)[0]
        names.update(n.strip() for n in first.split(","))
    return names


def flag_name(arg):
    return "--" + arg.lstrip("-").split("=", 1)[0]


COMPONENTS = [  # (table, host, env file, variable)
    ("kube-apiserver.txt", "k8s-master1", "/etc/kubernetes/apiserver", "KUBE_APISERVER_ARGS"),
    ("kube-controller-manager.txt", "k8s-master1", "/etc/kubernetes/controller-manager",
     "KUBE_CONTROLLER_MANAGER_ARGS"),
    ("kube-scheduler.txt", "k8s-master1", "/etc/kubernetes/scheduler", "KUBE_SCHEDULER_ARGS"),
    ("kubelet.txt", "k8s-node1", "/etc/kubernetes/kubelet", "KUBELET_ARGS"),
    ("kube-proxy.txt", "k8s-node1", "/etc/kubernetes/proxy", "KUBE_PROXY_ARGS"),
]


@pytest.mark.parametrize("table,host,path,var", COMPONENTS)
def test_every_rendered_flag_exists_in_1_10(rendered, table, host, path, var):
    known = flag_table(table)
    common = render.parse_env_file(text(rendered, host, "/etc/kubernetes/config"))
    flags = args(rendered, host, path, var) + common["KUBE_LOGTOSTDERR"].split() + common["KUBE_LOG_LEVEL"].split()
    assert all(a.startswith("--") and "=" in a for a in flags), flags
    unknown = [a for a in flags if flag_name(a) not in known]
    assert unknown == []
    assert len({flag_name(a) for a in flags}) == len(flags), "a flag is given twice"


@pytest.mark.parametrize("table,host,path,var", COMPONENTS)
def test_every_unit_uses_the_variables_its_env_files_define(rendered, table, host, path, var):
    unit = text(rendered, host, f"/etc/systemd/system/{table[:-4]}.service")
    assert f"EnvironmentFile={path}\n" in unit and f"${var}" in unit


def test_flanneld_flags_exist_in_0_10_and_use_go_syntax(rendered):
    known = flag_table("flanneld-0.10.0.txt")
    env = render.parse_env_file(text(rendered, "k8s-node1", "/etc/sysconfig/flanneld"))
    unit = text(rendered, "k8s-node1", "/etc/systemd/system/flanneld.service")
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    flags = env["FLANNEL_OPTIONS"].split() + [a for a in exec_start.split()[1:] if a.startswith("-")]
    assert all(re.match(r"^-[a-z]", a) for a in flags), flags  # single dash: Go's flag package
    assert [a for a in flags if flag_name(a) not in known] == []
    assert "-iface=eth0" in flags
    assert env["FLANNEL_ETCD_PREFIX"] == "/coreos.com/network"


# ------------------------------------------------------------------ values

def test_apiserver_values(rendered):
    a = args(rendered, "k8s-master2", "/etc/kubernetes/apiserver", "KUBE_APISERVER_ARGS")
    for want in ("--authorization-mode=Node,RBAC", "--anonymous-auth=false", "--insecure-port=0",
                 "--bind-address=192.168.10.12", "--advertise-address=192.168.10.12", "--secure-port=6443",
                 "--apiserver-count=3", "--allow-privileged=false", "--service-cluster-ip-range=10.254.0.0/16",
                 "--etcd-servers=https://192.168.10.11:2379,https://192.168.10.12:2379,https://192.168.10.13:2379"):
        assert want in a
    plugins = next(x for x in a if x.startswith("--enable-admission-plugins=")).split("=", 1)[1].split(",")
    assert "NodeRestriction" in plugins and "ServiceAccount" in plugins
    assert any(x.startswith("--audit-log-path=") for x in a)


def test_controller_manager_and_scheduler_elect_leaders(rendered):
    cm = args(rendered, "k8s-master1", "/etc/kubernetes/controller-manager", "KUBE_CONTROLLER_MANAGER_ARGS")
    sch = args(rendered, "k8s-master1", "/etc/kubernetes/scheduler", "KUBE_SCHEDULER_ARGS")
    assert "--leader-elect=true" in cm and "--leader-elect=true" in sch
    assert "--allocate-node-cidrs=false" in cm and "--use-service-account-credentials=true" in cm


def test_kubelet_values(rendered):
    a = args(rendered, "k8s-node2", "/etc/kubernetes/kubelet", "KUBELET_ARGS")
    for want in ("--hostname-override=k8s-node2", "--anonymous-auth=false", "--authorization-mode=Webhook",
                 "--read-only-port=0", "--cluster-dns=10.254.0.10", "--cluster-domain=cluster.local",
                 "--network-plugin=cni", "--cni-conf-dir=/etc/cni/net.d", "--cni-bin-dir=/opt/cni/bin",
                 "--cgroup-driver=cgroupfs", "--fail-swap-on=true",
                 "--pod-infra-container-image=harbor.example.com/kubernetes/pause-amd64:3.1"):
        assert want in a
    daemon = json.loads(text(rendered, "k8s-node2", "/etc/docker/daemon.json"))
    assert daemon["exec-opts"] == ["native.cgroupdriver=cgroupfs"]  # must equal kubelet's --cgroup-driver


def test_default_images_come_from_the_site_registry(inv):
    files = render.render_host(inv, "k8s-node1", pki_files={})
    assert "--pod-infra-container-image=harbor.example.com/kubernetes/pause-amd64:3.1" in \
        render.parse_env_file(files["/etc/kubernetes/kubelet"].content.decode())["KUBELET_ARGS"].split()


def test_docker_daemon_json_has_no_tcp_api_and_insecure_only_when_asked(inv, rendered):
    daemon = json.loads(text(rendered, "k8s-node1", "/etc/docker/daemon.json"))
    assert "hosts" not in daemon and "insecure-registries" not in daemon
    assert daemon["data-root"] == "/data/docker"
    insecure = inv.model_copy(update={"registry": inv.registry.model_copy(update={"insecure": True})})
    d2 = json.loads(render.render_host(insecure, "k8s-node1", pki_files={})["/etc/docker/daemon.json"].content)
    assert d2["insecure-registries"] == ["harbor.example.com"]


def test_docker_stays_off_the_pod_network(rendered, inv):
    """One network model: CNI owns pods (cni0 = flannel's subnet), docker0 has its own bip outside every range."""
    dropin = text(rendered, "k8s-node1", "/etc/systemd/system/docker.service.d/10-k8s.conf")
    assert "flannel" not in dropin.split("# docker 1.13")[0].split("\n", 2)[2]  # no flannel options for docker
    assert "DOCKER_NETWORK_OPTIONS" not in dropin and "EnvironmentFile" not in dropin
    assert "ExecStartPost=/usr/sbin/iptables -I FORWARD -s 0.0.0.0/0 -j ACCEPT" in dropin
    unit = text(rendered, "k8s-node1", "/etc/systemd/system/flanneld.service")
    assert "mk-docker-opts" not in unit and "docker.service" not in unit
    daemon = json.loads(text(rendered, "k8s-node1", "/etc/docker/daemon.json"))
    bip = ipaddress.ip_interface(daemon["bip"])
    assert daemon["bip"] == inv.cluster.docker_bip
    for net in (inv.cluster.pod_cidr, inv.cluster.service_cidr):
        assert not bip.network.overlaps(ipaddress.ip_network(net))


def test_cni_conflist(rendered):
    conf = json.loads(text(rendered, "k8s-node1", "/etc/cni/net.d/10-flannel.conflist"))
    assert [p["type"] for p in conf["plugins"]] == ["flannel", "portmap"]
    assert conf["plugins"][0]["delegate"]["type"] == "bridge"


def test_etcd_conf(inv):
    env = render.parse_env_file(render.render_host(inv, "k8s-master3", pki_files={})["/etc/etcd/etcd.conf"]
                                .content.decode())
    assert env["ETCD_NAME"] == "k8s-master3" and env["ETCD_INITIAL_CLUSTER_STATE"] == "new"
    assert env["ETCD_INITIAL_CLUSTER"] == ("k8s-master1=https://192.168.10.11:2380,"
                                           "k8s-master2=https://192.168.10.12:2380,k8s-master3=https://192.168.10.13:2380")
    assert env["ETCD_CLIENT_CERT_AUTH"] == env["ETCD_PEER_CLIENT_CERT_AUTH"] == env["ETCD_ENABLE_V2"] == "true"
    assert env["ETCD_DATA_DIR"] == "/var/lib/etcd"
    joining = render.render_host(inv, "k8s-master3", pki_files={}, etcd_joining=["k8s-master3"])
    assert render.parse_env_file(joining["/etc/etcd/etcd.conf"].content.decode())[
        "ETCD_INITIAL_CLUSTER_STATE"] == "existing"


def test_haproxy_checks_every_master(rendered):
    cfg = text(rendered, "k8s-master1", "/etc/haproxy/haproxy.cfg")
    for i in (1, 2, 3):
        assert f"server k8s-master{i} 192.168.10.1{i}:6443 check inter 2s fall 3 rise 2" in cfg
    assert "bind 192.168.10.100:8443" in cfg and "mode tcp" in cfg


def test_keepalived_priorities_descend_and_peers_are_the_others(rendered):
    prios = []
    for i in (1, 2, 3):
        conf = text(rendered, f"k8s-master{i}", "/etc/keepalived/keepalived.conf")
        prios.append(int(re.search(r"priority (\d+)", conf).group(1)))
        assert f"unicast_src_ip 192.168.10.1{i}" in conf
        peers = re.search(r"unicast_peer \{([^}]*)\}", conf).group(1).split()
        assert sorted(peers) == sorted(f"192.168.10.1{j}" for j in (1, 2, 3) if j != i)
        assert "192.168.10.100/24 dev eth0" in conf and "killall -0 haproxy" in conf
    assert prios == sorted(prios, reverse=True) and len(set(prios)) == 3
    states = [re.search(r"state (\w+)", text(rendered, f"k8s-master{i}", "/etc/keepalived/keepalived.conf")).group(1)
              for i in (1, 2, 3)]
    assert states == ["MASTER", "BACKUP", "BACKUP"]  # the highest priority holds the VIP from its start


def test_lb_priority_overrides_order(inv):
    hosts = list(inv.hosts)
    hosts[2] = hosts[2].model_copy(update={"lb_priority": 200})
    inv2 = inv.model_copy(update={"hosts": tuple(hosts)})
    conf = render.render_host(inv2, "k8s-master3", pki_files={})["/etc/keepalived/keepalived.conf"].content
    assert b"priority 200" in conf and b"state MASTER" in conf
    first = render.render_host(inv2, "k8s-master1", pki_files={})["/etc/keepalived/keepalived.conf"].content
    assert b"state BACKUP" in first


def test_sysctl_and_modules(rendered):
    lb = text(rendered, "k8s-master1", "/etc/sysctl.d/k8s.conf")
    node = text(rendered, "k8s-node1", "/etc/sysctl.d/k8s.conf")
    for key in ("net.bridge.bridge-nf-call-iptables = 1", "net.ipv4.ip_forward = 1",
                "net.ipv4.conf.all.rp_filter = 0", "net.ipv4.conf.all.arp_announce = 2"):
        assert key in lb and key in node
    assert "ip_nonlocal_bind = 1" in lb and "ip_nonlocal_bind" not in node
    assert "ip_vs" in text(rendered, "k8s-master1", "/etc/modules-load.d/k8s.conf")
    assert "br_netfilter" in text(rendered, "k8s-node1", "/etc/modules-load.d/k8s.conf")


def test_hosts_and_repo(rendered):
    hosts = text(rendered, "k8s-node1", "/etc/hosts")
    assert "192.168.10.13 k8s-master3" in hosts and "192.168.10.20 harbor.example.com" in hosts
    repo = text(rendered, "k8s-node1", "/etc/yum.repos.d/k8s-offline.repo")
    assert "baseurl=http://192.168.10.1:8080/repo" in repo and "gpgcheck=0" in repo


def test_gpgcheck_argument(inv):
    repo = render.render_host(inv, "k8s-node1", pki_files={}, gpgcheck=True, gpgkey="file:///etc/pki/k8s.gpg")
    content = repo["/etc/yum.repos.d/k8s-offline.repo"].content.decode()
    assert "gpgcheck=1" in content and "gpgkey=file:///etc/pki/k8s.gpg" in content


def test_a_missing_template_variable_is_an_error():
    with pytest.raises(jinja2.UndefinedError):
        render._ENV.from_string("{{ nope }}").render({})


def test_parse_env_file_follows_systemd_quoting():
    env = render.parse_env_file('# c\nA="--x=1 \\\n--y=2"\nB=plain\n; other\nC="say \\"hi\\""\n')
    assert env == {"A": "--x=1 --y=2", "B": "plain", "C": 'say "hi"'}


def test_write_tree_modes_and_replacing_only_our_own_dirs(tmp_path):
    tree = {"h1": {"/etc/a.key": File(b"k", 0o600), "/etc/b.conf": File(b"c", 0o644)}}
    assert render.write_tree(tree, tmp_path / "out") == 2
    assert stat.S_IMODE((tmp_path / "out/h1/etc/a.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "out/h1/etc/b.conf").stat().st_mode) == 0o644
    render.write_tree({"h1": {"/etc/b.conf": File(b"c2")}}, tmp_path / "out")
    assert not (tmp_path / "out/h1/etc/a.key").exists()  # stale files of an earlier render are gone
    mine = tmp_path / "mine"
    (mine / "h1").mkdir(parents=True)
    (mine / "h1" / "keep").write_text("x")
    render.write_tree(tree, mine)
    assert (mine / "h1" / "keep").exists()  # a directory we did not create is never cleaned


def test_render_to_dir(tmp_path):
    summary = render.render_to_dir(GOLDEN / "inventory.yaml", tmp_path / "state", tmp_path / "out",
                                   clock=lambda: T0)
    assert summary["hosts"]["k8s-node1"] > 10 and "apiserver" in summary["issued"]
    again = render.render_to_dir(GOLDEN / "inventory.yaml", tmp_path / "state", tmp_path / "out",
                                 clock=lambda: T0)
    assert again["issued"] == []
    assert (tmp_path / "out/k8s-master1/etc/kubernetes/apiserver").exists()


# ------------------------------------------------------------------ golden tree

def normalise(path: str, f: File) -> bytes:
    """What a golden file holds: PEM material as a placeholder, kubeconfigs and the encryption key redacted."""
    if path.endswith(".kubeconfig"):
        return kubeconfig.redact(f.content)
    if path == render.PATHS["encryption_config"]:
        return re.sub(rb"(?m)^(\s*secret: ).+$", rb"\1<redacted>", f.content)
    m = re.match(rb"-----BEGIN ([A-Z ]+)-----", f.content)
    if m:
        return b"<PEM " + m.group(1) + b">\n"
    return f.content


def golden_tree(rendered):
    """{relative golden path: bytes}, plus MODES listing every file's mode."""
    out = {}
    modes = []
    for host, files in rendered.items():
        for path, f in files.items():
            out[f"{host}{path}"] = normalise(path, f)
            modes.append(f"{oct(f.mode)[2:]:>4} {f.owner} {host}{path}")
    out["MODES"] = ("\n".join(sorted(modes, key=lambda m: m.split()[-1])) + "\n").encode()
    return out


def test_golden(rendered):
    want = golden_tree(rendered)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        for p in GOLDEN.iterdir():
            if p.is_dir():
                shutil.rmtree(p)
        (GOLDEN / "MODES").unlink(missing_ok=True)
        for rel, content in want.items():
            dest = GOLDEN / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(content)
    have = {str(p.relative_to(GOLDEN)): p.read_bytes() for p in GOLDEN.rglob("*")
            if p.is_file() and p.name != "inventory.yaml"}
    problems = []
    for rel in sorted(set(want) | set(have)):
        if rel not in have:
            problems.append(f"missing golden file {rel}")
        elif rel not in want:
            problems.append(f"golden file {rel} is no longer rendered")
        elif want[rel] != have[rel]:
            problems.extend(difflib.unified_diff(have[rel].decode().splitlines(), want[rel].decode().splitlines(),
                                                 f"golden/{rel}", f"rendered/{rel}", lineterm=""))
    if problems:
        print("\n".join(problems))
    assert not problems, "rendering differs from tests/golden/example (see the diff above; " \
                         "review it, then UPDATE_GOLDEN=1 to accept)"


def test_unchecked_repo_is_a_second_section_without_signature_check(inv):
    files = render.render_host(inv, "k8s-node1", pki_files={}, gpgcheck=True, gpgkey="file:///etc/pki/k8s.gpg",
                               unchecked_repo=True)
    cfg = configparser.ConfigParser()
    cfg.read_string(files["/etc/yum.repos.d/k8s-offline.repo"].content.decode())
    assert cfg.sections() == ["k8s-offline", "k8s-offline-unchecked"]
    assert cfg["k8s-offline"]["gpgcheck"] == "1" and cfg["k8s-offline"]["gpgkey"] == "file:///etc/pki/k8s.gpg"
    assert cfg["k8s-offline-unchecked"]["gpgcheck"] == "0"
    assert cfg["k8s-offline-unchecked"]["baseurl"] == cfg["k8s-offline"]["baseurl"] + "/unchecked"
    plain = render.render_host(inv, "k8s-node1", pki_files={}, gpgcheck=True, gpgkey="file:///etc/pki/k8s.gpg")
    assert "unchecked" not in plain["/etc/yum.repos.d/k8s-offline.repo"].content.decode()


HEALING_UNITS = [("k8s-master1", u) for u in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                                              "flanneld", "haproxy", "keepalived")] + \
                [("k8s-node1", u) for u in ("kubelet", "kube-proxy", "flanneld")]


@pytest.mark.parametrize("host,unit", HEALING_UNITS)
def test_units_heal_by_themselves(rendered, host, unit):
    """Every long-running unit restarts whatever ended it and never hits a start limit; nothing Requires= a unit
    that may fail to start (a failed dependency is not retried by systemd)."""
    text_ = text(rendered, host, f"/etc/systemd/system/{unit}.service")
    service = text_.split("[Service]", 1)[1].split("\n[", 1)[0]
    assert "\nRestart=always\n" in service and "\nStartLimitInterval=0\n" in service, service
    assert "Requires=" not in text_ and "BindsTo=" not in text_


def test_docker_heals_too(rendered):
    dropin = text(rendered, "k8s-node1", "/etc/systemd/system/docker.service.d/10-k8s.conf")
    assert "\nRestart=always\n" in dropin and "\nStartLimitInterval=0\n" in dropin
    assert "Wants=docker.service" in text(rendered, "k8s-node1", "/etc/systemd/system/kubelet.service")


@pytest.mark.parametrize("table,host,path,var", COMPONENTS)
def test_a_change_to_any_file_a_component_reads_restarts_it(rendered, table, host, path, var):
    """Every rendered file a flag names is owned by the component's unit in plan_rules.OWNERS (a change restarts it)."""
    from installer import plan_rules

    unit = table[:-4]
    named = [a.split("=", 1)[1] for a in args(rendered, host, path, var) if "=" in a]
    paths = [v for v in named if v.startswith("/") and v in rendered[host]]
    assert paths, "the component reads some rendered file"
    assert [p for p in paths if unit not in plan_rules.owners(p, [unit])] == []
