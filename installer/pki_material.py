"""What each host gets from the site PKI: CA certificates, keys, certificates and kubeconfigs of the components
it runs (their `material` in installer/components.py), Harbor's serving pair, and the control host's admin
kubeconfig."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from contract.errors import Error
from installer import components, kubeconfig
from installer.inventory import Host, Inventory
from installer.pki import Pki
from installer.render import File, encryption_config, registry_ca_path


def material_for(pki: Pki, inv: Inventory, host: Host) -> Dict[str, File]:
    """{remote path: File} of CA, certificates, keys and kubeconfigs the host needs: the `material` of each
    component it runs (installer/components.py)."""
    out: Dict[str, File] = {}
    ca = pki.ca_pem()
    servers = {components.VIP: f"https://{inv.cluster.vip}:{inv.cluster.lb_port}",
               components.LOCAL: f"https://{host.address}:{inv.cluster.apiserver_port}"}
    for c in components.for_host(host):
        for m in c.material:
            name = m.cert(host) if callable(m.cert) else m.cert
            if m.kind == components.CA:
                out[m.path] = File(ca, m.mode)
            elif m.kind == components.ETCD_CA:
                out[m.path] = File(pki.etcd_ca_pem(), m.mode)
            elif m.kind == components.CA_KEY:
                out[m.path] = File(pki.key_path("ca").read_bytes(), m.mode)
            elif m.kind == components.PKI_FILE:
                out[m.path] = File((pki.dir / name).read_bytes(), m.mode)
            elif m.kind == components.ENCRYPTION:
                out[m.path] = encryption_config(pki.encryption_key())
            elif m.kind == components.PAIR:
                crt, key = pki.read(name)
                out[m.path] = File(crt, 0o644)
                out[m.key_path] = File(key, 0o600)
            elif m.kind == components.KUBECONFIG:
                crt, key = pki.read(name)
                out[m.path] = File(kubeconfig.build(cluster=inv.cluster.name, server=servers[m.server],
                                                    user=m.user.format(host=host.name), ca_pem=ca, cert_pem=crt,
                                                    key_pem=key), 0o600)
            elif m.kind == components.REGISTRY_CA:
                reg_ca = registry_ca(pki, inv)
                if reg_ca is not None:
                    out[registry_ca_path(inv)] = File(reg_ca, m.mode)
            else:
                raise ValueError(f"component {c.name}: unknown kind of PKI material {m.kind!r}")
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
