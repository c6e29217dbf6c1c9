"""What each host gets from the site PKI: CA certificates, keys, certificates and kubeconfigs by its roles,
Harbor's serving pair, and the control host's admin kubeconfig."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from contract.errors import Error
from installer import etcd_users, kubeconfig
from installer.inventory import Host, Inventory
from installer.pki import Pki
from installer.pki_specs import etcd_name, kubelet_name, kubelet_server_name
from installer.render import PATHS, File, encryption_config, registry_ca_path


def material_for(pki: Pki, inv: Inventory, host: Host) -> Dict[str, File]:
    """{remote path: File} of CA, certificates, keys and kubeconfigs the host needs by its roles."""
    P = PATHS
    out: Dict[str, File] = {}
    ca = pki.ca_pem()

    def pair(name: str, crt_path: str, key_path: str) -> None:
        crt, key = pki.read(name)
        out[crt_path] = File(crt, 0o644)
        out[key_path] = File(key, 0o600)

    def kcfg(path: str, name: str, user: str, server: str) -> None:
        crt, key = pki.read(name)
        out[path] = File(kubeconfig.build(cluster=inv.cluster.name, server=server, user=user, ca_pem=ca,
                                          cert_pem=crt, key_pem=key), 0o600)

    vip_url = f"https://{inv.cluster.vip}:{inv.cluster.lb_port}"
    if host.has("etcd"):
        out[P["etcd_ca"]] = File(pki.etcd_ca_pem(), 0o644)  # the only CA etcd trusts (its key stays here)
        pair(etcd_name(host), P["etcd_crt"], P["etcd_key"])
        pair(etcd_users.ADMIN_CERT, P["etcd_admin_crt"], P["etcd_admin_key"])  # etcdctl there (root role)
    if host.has("master") or host.has("node"):
        out[P["ca"]] = File(ca, 0o644)
        out[P["etcd_client_ca"]] = File(pki.etcd_ca_pem(), 0o644)  # apiserver and flanneld verify etcd
        pair("etcd-client-flanneld", P["flanneld_etcd_crt"], P["flanneld_etcd_key"])  # flanneld runs on both
    if host.has("master"):
        out[P["ca_key"]] = File(pki.key_path("ca").read_bytes(), 0o600)  # cluster-signing (CSR approval)
        out[P["sa_key"]] = File((pki.dir / "sa.key").read_bytes(), 0o600)
        out[P["sa_pub"]] = File((pki.dir / "sa.pub").read_bytes(), 0o644)
        out[P["encryption_config"]] = encryption_config(pki.encryption_key())  # the same on every master
        pair("apiserver", P["apiserver_crt"], P["apiserver_key"])
        pair("apiserver-kubelet-client", P["apiserver_kubelet_client_crt"], P["apiserver_kubelet_client_key"])
        pair("etcd-client-apiserver", P["apiserver_etcd_client_crt"], P["apiserver_etcd_client_key"])
        # controller-manager and scheduler use the apiserver of their own host, as the seeds do; it
        # listens on the host address only (--bind-address), so that is the URL rather than 127.0.0.1
        local_url = f"https://{host.address}:{inv.cluster.apiserver_port}"
        kcfg(P["admin_kubeconfig"], "admin", "admin", vip_url)
        kcfg(P["cm_kubeconfig"], "controller-manager", "system:kube-controller-manager", local_url)
        kcfg(P["scheduler_kubeconfig"], "scheduler", "system:kube-scheduler", local_url)
    if host.has("node"):
        pair(kubelet_server_name(host), P["kubelet_crt"], P["kubelet_key"])
        kcfg(P["kubelet_kubeconfig"], kubelet_name(host), f"system:node:{host.name}", vip_url)
        kcfg(P["proxy_kubeconfig"], "kube-proxy", "system:kube-proxy", vip_url)
        reg_ca = registry_ca(pki, inv)
        if reg_ca is not None:
            out[registry_ca_path(inv)] = File(reg_ca, 0o644)
    return out


def registry_ca(pki: Pki, inv: Inventory) -> Optional[bytes]:
    """The CA docker must trust for the registry: ours, the external one's, or None (plain HTTP)."""
    r = inv.registry
    if r.insecure:
        return None
    if r.mode == "install":
        return pki.ca_pem()
    if r.ca_file:
        try:
            return Path(r.ca_file).expanduser().read_bytes()
        except OSError as e:
            raise Error(f"cannot read registry.ca_file {r.ca_file}: {e.strerror}",
                        context="collecting the registry CA", hint="fix registry.ca_file in the inventory") from None
    return None


def registry_material(pki: Pki, inv: Inventory) -> Dict[str, File]:
    """Harbor's serving certificate and key at the paths harbor.cfg points to (install mode only)."""
    r = inv.registry
    if r.mode != "install" or r.insecure:
        return {}
    crt, key = pki.read("registry")
    base = f"{r.data_dir.rstrip('/')}/cert"
    return {f"{base}/server.crt": File(crt + pki.ca_pem(), 0o644), f"{base}/server.key": File(key, 0o600)}


def admin_kubeconfig(pki: Pki, inv: Inventory) -> bytes:
    """The admin kubeconfig for the control host (through the VIP)."""
    crt, key = pki.read("admin")
    return kubeconfig.build(cluster=inv.cluster.name, server=f"https://{inv.cluster.vip}:{inv.cluster.lb_port}",
                            user="admin", ca_pem=pki.ca_pem(), cert_pem=crt, key_pem=key)
