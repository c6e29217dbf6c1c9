"""The component table: what every component of the cluster is, as data, in one place.

One `Component` per component: the hosts that run it (by role), the phase that writes and starts it, its
templates (remote path -> template in installer/templates/), its units in start order with the files each
reads (a change to one restarts exactly that unit) and the ports each listens on, its executables and where
each comes from in the bundle, its packages, the other host files it holds (PKI material, manifests), the
health gate its phase waits on and how a change is applied (restart its units, or `kubectl apply`).

render (templates), pki_material (host material), plan_rules (units, owners, phases, packages), preflight
(ports), site (executables from the bundle's release files), versions (which versions a host runs), plan
(gates) and harbor_install (the registry host) read this table; nothing here runs or renders anything.
A new component is one entry in COMPONENTS (tests/unit/test_components.py checks that every rendered file
has an owner and that every template, phase, gate and executable source named here exists).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, Union

from installer import etcd_users
from installer.pki_specs import etcd_name, kubelet_name, kubelet_server_name

BIN_DIR = "/usr/local/bin"
CNI_BIN_DIR = "/opt/cni/bin"
CNI_CONF_DIR = "/etc/cni/net.d"
UNIT_DIR = "/etc/systemd/system"
REPO_DIR = "/var/lib/k8s-offline/repo"
RPM_GPG_DIR = "/etc/pki/rpm-gpg"
ADDONS_DIR = "/etc/kubernetes/addons"
HARBOR_DIR = "/opt/harbor"
K = "/etc/kubernetes"

# Where PKI material lives on the hosts; templates and pki_material.material_for both read this one table.
PATHS = {
    "ca": f"{K}/pki/ca.crt",
    "ca_key": f"{K}/pki/ca.key",
    "sa_key": f"{K}/pki/sa.key",
    "sa_pub": f"{K}/pki/sa.pub",
    "apiserver_crt": f"{K}/pki/apiserver.crt",
    "apiserver_key": f"{K}/pki/apiserver.key",
    "apiserver_kubelet_client_crt": f"{K}/pki/apiserver-kubelet-client.crt",
    "apiserver_kubelet_client_key": f"{K}/pki/apiserver-kubelet-client.key",
    "apiserver_etcd_client_crt": f"{K}/pki/apiserver-etcd-client.crt",
    "apiserver_etcd_client_key": f"{K}/pki/apiserver-etcd-client.key",
    "kubelet_crt": f"{K}/pki/kubelet.crt",
    "kubelet_key": f"{K}/pki/kubelet.key",
    "flanneld_etcd_crt": f"{K}/pki/flanneld-etcd-client.crt",
    "flanneld_etcd_key": f"{K}/pki/flanneld-etcd-client.key",
    "etcd_ca": "/etc/etcd/pki/ca.crt",
    "etcd_client_ca": f"{K}/pki/etcd-ca.crt",  # verifies etcd's servers (apiserver, flanneld)
    "etcd_crt": "/etc/etcd/pki/server.crt",
    "etcd_key": "/etc/etcd/pki/server.key",
    "etcd_admin_crt": "/etc/etcd/pki/admin.crt",  # etcdctl's credential on the etcd hosts (not read by etcd)
    "etcd_admin_key": "/etc/etcd/pki/admin.key",
    "admin_kubeconfig": f"{K}/admin.kubeconfig",
    "cm_kubeconfig": f"{K}/controller-manager.kubeconfig",
    "scheduler_kubeconfig": f"{K}/scheduler.kubeconfig",
    "kubelet_kubeconfig": f"{K}/kubelet.kubeconfig",
    "proxy_kubeconfig": f"{K}/kube-proxy.kubeconfig",
    "audit_policy": f"{K}/audit-policy.yaml",
    "audit_log": "/var/log/kubernetes/audit.log",
    "admission_config": f"{K}/admission-control.yaml",
    "eventratelimit_config": f"{K}/eventratelimit.yaml",
    # an EncryptionConfig (YAML) beside the apiserver's keys; named .key because it is one: the secrets' aescbc
    # key (0600, never shown in a plan, restarts kube-apiserver when it changes)
    "encryption_config": f"{K}/pki/apiserver-encryption.key",
}
P = PATHS

# The phases of apply, in order (installer/plan.py says what each does).
PHASES = ("preflight", "packages", "os-prep", "registry", "etcd", "etcd-auth", "flannel-network", "flannel", "masters",
          "lb", "nodes", "addons")
ROLES = ("etcd", "master", "lb", "node")  # a cluster host's roles, in the order their units come on a host
REGISTRY_HOST = "registry-host"  # what a component runs on when it runs on install mode's registry host (no role)

# How a changed component is applied on its host.
RESTART = "restart"  # restart the units that read a changed file
KUBECTL_APPLY = "kubectl-apply"  # `kubectl apply` of its manifests on the first master


@dataclass(frozen=True)
class Version:
    """One version a bundle brings: its name in reports and templates, the signed manifest's component that
    carries it, the RPM it comes in (when one does) and the release rendering assumes without a bundle."""

    name: str
    manifest: str
    default: str
    package: Optional[str] = None


VERSIONS = (
    Version("kubernetes", "binary/kubernetes-server", "1.10.3"),
    Version("etcd", "binary/etcd", "3.3.1"),
    Version("flannel", "binary/flannel", "0.10.0"),
    Version("cni", "binary/cni-plugins", "0.7.0"),
    Version("docker", "rpm/docker-ce", "18.09.1", package="docker-ce"),
    Version("haproxy", "rpm/haproxy", "1.5.18", package="haproxy"),  # CentOS 7 base repository
    Version("keepalived", "rpm/keepalived", "1.3.5", package="keepalived"),
)


@dataclass(frozen=True)
class Unit:
    """A systemd unit: the host files it reads (globs; a change to one restarts it) and the ports it listens on
    (an int, or the name of the inventory's cluster setting that holds it)."""

    name: str
    reads: Tuple[str, ...]
    ports: Tuple[Union[int, str], ...] = ()


@dataclass(frozen=True)
class Binary:
    """An executable installed as <dir>/<name>: the release file of the bundle's binaries/ it comes from (a glob),
    the path suffix of the member inside that tarball (None: the file itself), and the VERSIONS name it is part of
    (None: not reported)."""

    name: str
    archive: str
    member: Optional[str]
    version: Optional[str]
    dir: str = BIN_DIR

    @property
    def path(self) -> str:
        return f"{self.dir}/{self.name}"


# Kinds of PKI host material (pki_material.material_for makes each).
CA, ETCD_CA, CA_KEY, PKI_FILE, ENCRYPTION, PAIR, KUBECONFIG, REGISTRY_CA = (
    "ca", "etcd-ca", "ca-key", "pki-file", "encryption", "pair", "kubeconfig", "registry-ca")
VIP, LOCAL = "vip", "local"  # the apiserver a kubeconfig names: through the VIP, or the host's own


@dataclass(frozen=True)
class Material:
    """One piece of PKI material a component's hosts get: `kind` says what it is; `cert` names the certificate in
    the state directory's PKI (or makes that name from the host), `path`/`key_path` where it goes; a kubeconfig's
    `user` ({host} is the host's name) and `server` (VIP or LOCAL); PKI_FILE copies `cert` from the PKI as is."""

    kind: str
    path: str = ""
    key_path: str = ""
    cert: Union[str, Callable[..., str]] = ""
    user: str = ""
    server: str = VIP
    mode: int = 0o644


@dataclass(frozen=True)
class Component:
    """One component: see the module docstring. `roles`: a host with any of them runs it (REGISTRY_HOST: the
    registry host of install mode); `files`: other host files it holds (globs) that no unit rereads; `observed`:
    units apply reads the state of without running them; `gate`: the plan_model.Gate its phase waits on after a
    change, and `gate_units` whose logs a gate not reached shows."""

    name: str
    roles: Tuple[str, ...]
    phase: str
    templates: Tuple[Tuple[str, str], ...] = ()
    units: Tuple[Unit, ...] = ()
    binaries: Tuple[Binary, ...] = ()
    packages: Tuple[str, ...] = ()
    files: Tuple[str, ...] = ()
    material: Tuple[Material, ...] = ()
    observed: Tuple[str, ...] = ()
    gate: Optional[str] = None
    gate_units: Tuple[str, ...] = ()
    apply: str = RESTART

    @property
    def unit_names(self) -> Tuple[str, ...]:
        return tuple(u.name for u in self.units)


def _kube(name: str) -> Binary:
    return Binary(name, "kubernetes-server-linux-amd64.tar.gz", f"kubernetes/server/bin/{name}", "kubernetes")


def _cni(name: str) -> Binary:
    return Binary(name, "cni-plugins-amd64-v*.tgz", name, "cni", dir=CNI_BIN_DIR)  # ./bridge, ./flannel, ...


KUBECTL = _kube("kubectl")
ETCD_ARCHIVE = "etcd-v*-linux-amd64.tar.gz"
FLANNEL_ARCHIVE = "flannel-v*-linux-amd64.tar.gz"
DOCKER_UNIT = Unit("docker", ("/etc/docker/daemon.json", f"{UNIT_DIR}/docker.service.d/*"))
DOCKER_PACKAGES = ("docker-ce", "docker-ce-cli", "containerd.io")

OS = Component(
    "os", ROLES, "os-prep",
    templates=(("/etc/hosts", "hosts.j2"), ("/etc/sysctl.d/k8s.conf", "sysctl-k8s.conf.j2"),
               ("/etc/modules-load.d/k8s.conf", "modules-load-k8s.conf.j2")),
    observed=("firewalld", "systemd-sysctl"))  # os-prep disables the one, restarts the other on a sysctl change
REPO = Component(  # the bundle's yum repository, its file and the keys yum checks packages against
    "repo", ROLES + (REGISTRY_HOST,), "packages",
    templates=(("/etc/yum.repos.d/k8s-offline.repo", "k8s-offline.repo.j2"),),
    files=(f"{REPO_DIR}/*", f"{RPM_GPG_DIR}/*"))
ETCD = Component(
    "etcd", ("etcd",), "etcd",
    templates=(("/etc/etcd/etcd.conf", "etcd.conf.j2"), (f"{UNIT_DIR}/etcd.service", "etcd.service.j2")),
    units=(Unit("etcd", ("/etc/etcd/etcd.conf", "/etc/etcd/pki/ca.crt", "/etc/etcd/pki/server.*",
                         f"{UNIT_DIR}/etcd.service", f"{BIN_DIR}/etcd"), (2379, 2380)),),
    binaries=(Binary("etcd", ETCD_ARCHIVE, "/etcd", "etcd"), Binary("etcdctl", ETCD_ARCHIVE, "/etcdctl", "etcd")),
    files=("/etc/etcd/*",),
    material=(Material(ETCD_CA, P["etcd_ca"]),  # the only CA etcd trusts (its key stays on the control host)
              Material(PAIR, P["etcd_crt"], P["etcd_key"], etcd_name),
              Material(PAIR, P["etcd_admin_crt"], P["etcd_admin_key"], etcd_users.ADMIN_CERT)),  # etcdctl there
    gate="etcd-health", gate_units=("etcd",))
KUBERNETES = Component(  # what every master and node shares: the common flags and the site CA
    "kubernetes", ("master", "node"), "masters",
    templates=((f"{K}/config", "kubernetes-config.j2"),),
    material=(Material(CA, P["ca"]),))
FLANNEL = Component(  # on masters and nodes: the apiserver must reach pod IPs (metrics-server, webhooks, proxy)
    "flannel", ("master", "node"), "flannel",
    templates=(("/etc/sysconfig/flanneld", "flanneld.sysconfig.j2"),
               (f"{UNIT_DIR}/flanneld.service", "flanneld.service.j2")),
    units=(Unit("flanneld", ("/etc/sysconfig/flanneld", f"{K}/pki/etcd-ca.crt", f"{K}/pki/flanneld-etcd-client*",
                             f"{UNIT_DIR}/flanneld.service", f"{BIN_DIR}/flanneld")),),
    binaries=(Binary("flanneld", FLANNEL_ARCHIVE, "flanneld", "flannel"),),
    material=(Material(ETCD_CA, P["etcd_client_ca"]),  # apiserver and flanneld verify etcd with it
              Material(PAIR, P["flanneld_etcd_crt"], P["flanneld_etcd_key"], "etcd-client-flanneld")))
MASTER = Component(
    "master", ("master",), "masters",
    templates=((f"{K}/apiserver", "apiserver.j2"), (f"{K}/controller-manager", "controller-manager.j2"),
               (f"{K}/scheduler", "scheduler.j2"), (P["audit_policy"], "audit-policy.yaml.j2"),
               (P["admission_config"], "admission-control.yaml.j2"),
               (P["eventratelimit_config"], "eventratelimit.yaml.j2"),
               (f"{UNIT_DIR}/kube-apiserver.service", "kube-apiserver.service.j2"),
               (f"{UNIT_DIR}/kube-controller-manager.service", "kube-controller-manager.service.j2"),
               (f"{UNIT_DIR}/kube-scheduler.service", "kube-scheduler.service.j2")),
    units=(Unit("kube-apiserver", (f"{K}/config", f"{K}/apiserver", f"{K}/audit-policy.yaml",
                                   f"{K}/admission-control.yaml", f"{K}/eventratelimit.yaml", f"{K}/pki/ca.crt",
                                   f"{K}/pki/etcd-ca.crt", f"{K}/pki/apiserver*", f"{K}/pki/sa.*",
                                   f"{UNIT_DIR}/kube-apiserver.service", f"{BIN_DIR}/kube-apiserver"),
                ("apiserver_port",)),
           Unit("kube-controller-manager", (f"{K}/config", f"{K}/controller-manager",
                                            f"{K}/controller-manager.kubeconfig", f"{K}/pki/ca.*", f"{K}/pki/sa.key",
                                            f"{UNIT_DIR}/kube-controller-manager.service",
                                            f"{BIN_DIR}/kube-controller-manager"), (10252,)),
           Unit("kube-scheduler", (f"{K}/config", f"{K}/scheduler", f"{K}/scheduler.kubeconfig",
                                   f"{UNIT_DIR}/kube-scheduler.service", f"{BIN_DIR}/kube-scheduler"), (10251,))),
    binaries=(_kube("kube-apiserver"), _kube("kube-controller-manager"), _kube("kube-scheduler"), KUBECTL),
    material=(Material(CA_KEY, P["ca_key"], mode=0o600),  # cluster-signing (CSR approval)
              Material(PKI_FILE, P["sa_key"], cert="sa.key", mode=0o600),
              Material(PKI_FILE, P["sa_pub"], cert="sa.pub"),
              Material(ENCRYPTION, P["encryption_config"]),  # the same on every master
              Material(PAIR, P["apiserver_crt"], P["apiserver_key"], "apiserver"),
              Material(PAIR, P["apiserver_kubelet_client_crt"], P["apiserver_kubelet_client_key"],
                       "apiserver-kubelet-client"),
              Material(PAIR, P["apiserver_etcd_client_crt"], P["apiserver_etcd_client_key"], "etcd-client-apiserver"),
              # controller-manager and scheduler use the apiserver of their own host, as the seeds do; it
              # listens on the host address only (--bind-address), so that is the URL rather than 127.0.0.1
              Material(KUBECONFIG, P["admin_kubeconfig"], cert="admin", user="admin"),
              Material(KUBECONFIG, P["cm_kubeconfig"], cert="controller-manager",
                       user="system:kube-controller-manager", server=LOCAL),
              Material(KUBECONFIG, P["scheduler_kubeconfig"], cert="scheduler", user="system:kube-scheduler",
                       server=LOCAL)),
    gate="apiserver-healthz", gate_units=("kube-apiserver", "kube-controller-manager", "kube-scheduler"))
LB = Component(
    "lb", ("lb",), "lb",
    templates=(("/etc/haproxy/haproxy.cfg", "haproxy.cfg.j2"),
               ("/etc/keepalived/keepalived.conf", "keepalived.conf.j2"),
               (f"{UNIT_DIR}/haproxy.service", "haproxy.service.j2"),
               (f"{UNIT_DIR}/keepalived.service", "keepalived.service.j2")),
    units=(Unit("haproxy", ("/etc/haproxy/*", f"{UNIT_DIR}/haproxy.service"), ("lb_port",)),
           Unit("keepalived", ("/etc/keepalived/*", f"{UNIT_DIR}/keepalived.service"))),
    packages=("haproxy", "keepalived", "ipvsadm"),
    gate="vip-healthz", gate_units=("haproxy", "keepalived"))
DOCKER = Component(
    "docker", ("node",), "nodes",
    templates=((f"{UNIT_DIR}/docker.service.d/10-k8s.conf", "docker-dropin.conf.j2"),
               ("/etc/docker/daemon.json", "daemon.json.j2")),
    units=(DOCKER_UNIT,), packages=DOCKER_PACKAGES,
    files=("/etc/docker/certs.d/*",),  # read at each pull: no restart
    material=(Material(REGISTRY_CA),))  # at render.registry_ca_path(inv), when the registry needs one
CNI = Component(  # read by the kubelet at each pod's start: no restart
    "cni", ("node",), "nodes",
    templates=((f"{CNI_CONF_DIR}/10-flannel.conflist", "10-flannel.conflist.j2"),),
    binaries=tuple(_cni(n) for n in ("bridge", "flannel", "host-local", "loopback", "portmap")))
KUBELET = Component(
    "kubelet", ("node",), "nodes",
    templates=((f"{K}/kubelet", "kubelet.j2"), (f"{UNIT_DIR}/kubelet.service", "kubelet.service.j2")),
    units=(Unit("kubelet", (f"{K}/config", f"{K}/kubelet", f"{K}/kubelet.kubeconfig", f"{K}/pki/ca.crt",
                            f"{K}/pki/kubelet.*", f"{UNIT_DIR}/kubelet.service", f"{BIN_DIR}/kubelet"), (10250,)),),
    binaries=(_kube("kubelet"), KUBECTL),
    packages=("socat",),  # kubectl port-forward
    material=(Material(PAIR, P["kubelet_crt"], P["kubelet_key"], kubelet_server_name),
              Material(KUBECONFIG, P["kubelet_kubeconfig"], cert=kubelet_name, user="system:node:{host}")),
    gate="node-ready", gate_units=("kubelet", "docker"))
KUBE_PROXY = Component(
    "kube-proxy", ("node",), "nodes",
    templates=((f"{K}/proxy", "proxy.j2"), (f"{UNIT_DIR}/kube-proxy.service", "kube-proxy.service.j2")),
    units=(Unit("kube-proxy", (f"{K}/config", f"{K}/proxy", f"{K}/kube-proxy.kubeconfig",
                               f"{UNIT_DIR}/kube-proxy.service", f"{BIN_DIR}/kube-proxy"), (10249, 10256)),),
    binaries=(_kube("kube-proxy"),),
    packages=("conntrack-tools", "ipset"),
    material=(Material(KUBECONFIG, P["proxy_kubeconfig"], cert="kube-proxy", user="system:kube-proxy"),))
REGISTRY = Component(  # install mode: Harbor on a host of its own (installer/harbor_install.py)
    "registry", (REGISTRY_HOST,), "registry",
    templates=((f"{HARBOR_DIR}/harbor.cfg", "harbor.cfg.j2"),),  # rendered with its passwords (render.harbor_cfg)
    units=(DOCKER_UNIT,),  # Harbor's containers need a running docker
    binaries=(Binary("docker-compose", "docker-compose-Linux-x86_64", None, None),),
    packages=DOCKER_PACKAGES,
    files=(f"{HARBOR_DIR}/*", "*/cert/server.crt", "*/cert/server.key"),  # below registry.data_dir
    gate="harbor-api")
ADDONS = Component(  # manifests rendered from the bundle's manifests/ templates, on the first master only
    "addons", ("master",), "addons",
    files=(f"{ADDONS_DIR}/*",),
    apply=KUBECTL_APPLY)

# In table order: a host's units start in role order (ROLES), then in this order within a role.
COMPONENTS: Tuple[Component, ...] = (OS, REPO, ETCD, KUBERNETES, FLANNEL, MASTER, LB, DOCKER, CNI, KUBELET,
                                     KUBE_PROXY, REGISTRY, ADDONS)
BY_NAME: Dict[str, Component] = {c.name: c for c in COMPONENTS}
# unit name -> (the unit, the first component that runs it: its phase is the unit's)
UNITS: Dict[str, Tuple[Unit, Component]] = {}
for _c in COMPONENTS:
    for _u in _c.units:
        UNITS.setdefault(_u.name, (_u, _c))
ADDONS_UNIT = "addons"  # pseudo unit in the pending set: manifests written (or about to be), `kubectl apply` due
ADDONS_COMMAND = f"{BIN_DIR}/kubectl --kubeconfig {PATHS['admin_kubeconfig']} apply -f {ADDONS_DIR}/"


def for_host(host) -> Tuple[Component, ...]:
    """The components a host runs: by role in ROLES order, each role's in table order (so its units come in start
    order); the registry host of install mode (no role) runs those of REGISTRY_HOST."""
    roles = tuple(r for r in ROLES if host.has(r)) or (REGISTRY_HOST,)
    out = []
    for role in roles:
        out += [c for c in COMPONENTS if role in c.roles and c not in out]
    return tuple(out)
