"""What the inventory asks of the site PKI: every certificate's subject, SANs, usages and signing CA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet, List, Tuple

from installer import etcd_users
from installer.inventory import Host, Inventory

SITE_CA, ETCD_CA = "ca", "etcd-ca"  # file stems of the two CAs in <state>/pki


@dataclass(frozen=True)
class CertSpec:
    """What one certificate must say: subject, SANs and usages."""

    name: str  # file stem in <state>/pki
    cn: str
    orgs: Tuple[str, ...] = ()
    dns: FrozenSet[str] = frozenset()
    ips: FrozenSet[str] = frozenset()
    server: bool = False
    client: bool = False
    ca: str = SITE_CA  # the CA that signs it: SITE_CA, or ETCD_CA for etcd's servers, peers and clients

    @property
    def usages(self) -> FrozenSet[str]:
        return frozenset(u for u, on in (("serverAuth", self.server), ("clientAuth", self.client)) if on)


def etcd_name(h: Host) -> str:
    return f"etcd-{h.name}"


def kubelet_name(h: Host) -> str:
    return f"kubelet-{h.name}"


def kubelet_server_name(h: Host) -> str:
    return f"kubelet-server-{h.name}"


def specs(inv: Inventory, etcd_ca: str = ETCD_CA) -> List[CertSpec]:
    """Every certificate the inventory needs, in a stable order.

    etcd trusts only its own CA (etcd_ca): the site CA, whose key the masters hold for the CSR signer, signs
    kubelet, kube-proxy and every CSR-API certificate, and none of them may be an etcd client. A PKI made
    before the etcd CA existed keeps etcd on the site CA (etcd_ca=SITE_CA) until it is migrated."""
    c = inv.cluster
    out: List[CertSpec] = []
    for h in inv.etcd_members:
        out.append(CertSpec(etcd_name(h), h.name, dns=frozenset({h.name, "localhost"}),
                            ips=frozenset({h.address, "127.0.0.1"}), server=True, client=True, ca=etcd_ca))
    out += [
        CertSpec("etcd-client-apiserver", etcd_users.APISERVER_CN, client=True, ca=etcd_ca),
        CertSpec("etcd-client-flanneld", "flanneld", client=True, ca=etcd_ca),
        CertSpec("etcd-healthcheck", "etcd-healthcheck", client=True, ca=etcd_ca),
    ]
    if inv.etcd_members:  # etcdctl on the etcd hosts, as a user with the root role (installer/etcd_auth.py)
        out.append(CertSpec(etcd_users.ADMIN_CERT, etcd_users.ADMIN_CN, client=True, ca=etcd_ca))
    out += [
        CertSpec(
            "apiserver", "kube-apiserver", server=True,
            dns=frozenset({"kubernetes", "kubernetes.default", "kubernetes.default.svc",
                           f"kubernetes.default.svc.{c.domain}", "localhost"} | {m.name for m in inv.masters}),
            ips=frozenset({c.vip, "127.0.0.1", c.kubernetes_service_ip} | {m.address for m in inv.masters}),
        ),
        CertSpec("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",), client=True),
        CertSpec("admin", "admin", ("system:masters",), client=True),
        CertSpec("controller-manager", "system:kube-controller-manager", client=True),
        CertSpec("scheduler", "system:kube-scheduler", client=True),
        CertSpec("kube-proxy", "system:kube-proxy", client=True),
    ]
    for h in inv.nodes:
        out.append(CertSpec(kubelet_name(h), f"system:node:{h.name}", ("system:nodes",), client=True))
        out.append(CertSpec(kubelet_server_name(h), h.name, dns=frozenset({h.name}),
                            ips=frozenset({h.address}), server=True))
    r = inv.registry
    if r.mode == "install" and not r.insecure:
        out.append(CertSpec("registry", r.hostname, dns=frozenset({r.hostname}), ips=frozenset({r.address}),
                            server=True))
    return out

