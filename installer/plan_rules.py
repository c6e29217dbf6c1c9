"""The planner's tables: which units each role runs and in which phase, which files each unit reads (a change
restarts exactly those), which packages each role installs, and which files a plan never shows."""

from __future__ import annotations

import fnmatch
from typing import Dict, Iterable, List, Optional, Tuple

from installer.inventory import Host
from installer.render import BIN_DIR, PATHS, UNIT_DIR, File

PHASES = ("preflight", "packages", "os-prep", "registry", "etcd", "etcd-auth", "flannel-network", "flannel", "masters",
          "lb", "nodes", "addons")
REPO_DIR = "/var/lib/k8s-offline/repo"
ADDONS_DIR = "/etc/kubernetes/addons"
ADDONS_UNIT = "addons"  # pseudo unit in the pending set: manifests written (or about to be), `kubectl apply` due
KUBECTL_APPLY = f"{BIN_DIR}/kubectl --kubeconfig {PATHS['admin_kubeconfig']} apply -f {ADDONS_DIR}/"
SECRET_DIRS = ("/etc/kubernetes/pki/", "/etc/etcd/pki/")

# Units each role runs, in start order. flanneld runs wherever the pod network must reach: masters and nodes.
ROLE_UNITS = {
    "etcd": ("etcd",),
    "master": ("flanneld", "kube-apiserver", "kube-controller-manager", "kube-scheduler"),
    "lb": ("haproxy", "keepalived"),
    "node": ("flanneld", "docker", "kubelet", "kube-proxy"),
}
MASTER_UNITS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
UNIT_PHASE = {"etcd": "etcd", "kube-apiserver": "masters", "kube-controller-manager": "masters",
              "kube-scheduler": "masters", "haproxy": "lb", "keepalived": "lb", "flanneld": "flannel",
              "docker": "nodes", "kubelet": "nodes", "kube-proxy": "nodes"}
ROLE_PACKAGES = {
    "lb": ("haproxy", "keepalived", "ipvsadm"),
    "node": ("docker-ce", "docker-ce-cli", "containerd.io", "socat", "conntrack-tools", "ipset"),
}
K = "/etc/kubernetes"
# Which files a unit reads: a change to one of them restarts exactly these units.
OWNERS: Dict[str, Tuple[str, ...]] = {
    "etcd": ("/etc/etcd/etcd.conf", "/etc/etcd/pki/ca.crt", "/etc/etcd/pki/server.*", f"{UNIT_DIR}/etcd.service",
             f"{BIN_DIR}/etcd"),
    "kube-apiserver": (f"{K}/config", f"{K}/apiserver", f"{K}/audit-policy.yaml", f"{K}/admission-control.yaml",
                       f"{K}/eventratelimit.yaml", f"{K}/pki/ca.crt", f"{K}/pki/etcd-ca.crt",
                       f"{K}/pki/apiserver*", f"{K}/pki/sa.*", f"{UNIT_DIR}/kube-apiserver.service",
                       f"{BIN_DIR}/kube-apiserver"),
    "kube-controller-manager": (f"{K}/config", f"{K}/controller-manager", f"{K}/controller-manager.kubeconfig",
                                f"{K}/pki/ca.*", f"{K}/pki/sa.key", f"{UNIT_DIR}/kube-controller-manager.service",
                                f"{BIN_DIR}/kube-controller-manager"),
    "kube-scheduler": (f"{K}/config", f"{K}/scheduler", f"{K}/scheduler.kubeconfig",
                       f"{UNIT_DIR}/kube-scheduler.service", f"{BIN_DIR}/kube-scheduler"),
    "haproxy": ("/etc/haproxy/*", f"{UNIT_DIR}/haproxy.service"),
    "keepalived": ("/etc/keepalived/*", f"{UNIT_DIR}/keepalived.service"),
    "flanneld": ("/etc/sysconfig/flanneld", f"{K}/pki/etcd-ca.crt", f"{K}/pki/flanneld-etcd-client*",
                 f"{UNIT_DIR}/flanneld.service", f"{BIN_DIR}/flanneld"),
    "docker": ("/etc/docker/daemon.json", f"{UNIT_DIR}/docker.service.d/*"),
    "kubelet": (f"{K}/config", f"{K}/kubelet", f"{K}/kubelet.kubeconfig", f"{K}/pki/ca.crt", f"{K}/pki/kubelet.*",
                f"{UNIT_DIR}/kubelet.service", f"{BIN_DIR}/kubelet"),
    "kube-proxy": (f"{K}/config", f"{K}/proxy", f"{K}/kube-proxy.kubeconfig", f"{UNIT_DIR}/kube-proxy.service",
                   f"{BIN_DIR}/kube-proxy"),
}
OS_PREP_FILES = ("/etc/hosts", "/etc/sysctl.d/k8s.conf", "/etc/modules-load.d/k8s.conf")
SHARED_FILES = ("/etc/hosts",)  # files of other hosts that add-node may change (no restart follows)
MODULES = ("br_netfilter", "overlay")


def wanted_packages(host: Host) -> Tuple[str, ...]:
    """Packages a host gets from the bundle's repo, by its roles."""
    out: List[str] = []
    for role, pkgs in ROLE_PACKAGES.items():
        if host.has(role):
            out += [p for p in pkgs if p not in out]
    return tuple(out)


def wanted_units(host: Host) -> Tuple[str, ...]:
    """Units a host runs, in phase and start order."""
    out: List[str] = []
    for role in ("etcd", "master", "lb", "node"):
        if host.has(role):
            out += [u for u in ROLE_UNITS[role] if u not in out]
    return tuple(out)


def owners(path: str, units: Iterable[str]) -> Tuple[str, ...]:
    """The units (of those given) that read path."""
    return tuple(u for u in units if any(fnmatch.fnmatchcase(path, p) for p in OWNERS.get(u, ())))


def phase_of(path: str, host: Host) -> str:
    """The phase that writes a file: the earliest phase of a unit that reads it, else by location."""
    # the repo, its file and the keys yum checks packages against must all be there before any install
    if path.startswith((REPO_DIR + "/", "/etc/yum.repos.d/", "/etc/pki/rpm-gpg/")):
        return "packages"
    if not host.roles:
        return "registry"  # only the registry host (install mode) has no cluster role
    if path in OS_PREP_FILES:
        return "os-prep"
    if path.startswith(ADDONS_DIR + "/"):
        return "addons"
    units = owners(path, wanted_units(host))
    if units:
        return min((UNIT_PHASE[u] for u in units), key=PHASES.index)
    if path.startswith("/etc/etcd/"):
        return "etcd"
    if host.has("master") and (path.startswith(K + "/") or path == f"{BIN_DIR}/kubectl"):
        return "masters"
    if host.has("etcd") and path == f"{BIN_DIR}/etcdctl":
        return "etcd"
    return "nodes"


def is_secret(path: str, f: Optional[File] = None) -> bool:
    """Files whose content never appears in a plan: keys, certificates' dirs, kubeconfigs (0600)."""
    return path.endswith(".key") or path.startswith(SECRET_DIRS) or (f is not None and f.mode & 0o077 == 0)

