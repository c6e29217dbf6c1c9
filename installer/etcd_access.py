"""`installer check`: etcd accepts no credential signed by the site CA.

The site CA signs what lives on the nodes (kubelet, kube-proxy) and every certificate the CSR API issues (the
masters hold its key for the controller-manager's signer); etcd must trust only its own CA, whose key never
leaves the control host's state directory. The check presents each site-CA client certificate of the
state directory to an etcd member: the TLS handshake must be refused. One that gets an answer is a failure
naming it, so a regression (or a PKI made before the etcd CA existed) shows up on every check.
"""

from __future__ import annotations

from typing import List

import requests

from installer.inventory import Inventory
from installer.pki import Pki
from installer.pki_specs import SITE_CA

CHECK = "etcd client access"
TIMEOUT = 5.0


def site_ca_clients(inv: Inventory, pki: Pki) -> List[str]:
    """Names of the site-CA client certificates present in the state directory (kubelet-*, kube-proxy, ...)."""
    return [s.name for s in pki.specs(inv) if s.ca == SITE_CA and s.client and pki.crt_path(s.name).exists()]


def refused(inv: Inventory, pki: Pki, session: requests.Session) -> list:
    from installer.checks import Result  # checks imports this module

    members = inv.etcd_members
    if not members:
        return []
    names = site_ca_clients(inv, pki)
    verify = str(pki.crt_path(pki.etcd_ca_name()))
    for m in members:  # the first member that answers at all decides
        url = f"https://{m.address}:2379/v2/keys/?quorum=false"
        accepted, unknown = [], []
        for name in names:
            try:
                r = session.get(url, cert=(str(pki.crt_path(name)), str(pki.key_path(name))), verify=verify,
                                timeout=TIMEOUT)
            except requests.exceptions.SSLError:
                continue  # refused in the handshake: what must happen
            except requests.RequestException as e:
                unknown.append(f"{name}: {type(e).__name__}")
                continue
            accepted.append(f"{name} (HTTP {r.status_code})")
        if unknown and len(unknown) == len(names):
            continue  # this member did not answer: try the next one
        if accepted:
            legacy = pki.etcd_ca_name() == SITE_CA
            why = ("this PKI predates the separate etcd CA: etcd still trusts the site CA"
                   if legacy else "etcd trusts a CA that signs node credentials")
            return [Result(CHECK, m.name, False, f"etcd accepts {', '.join(accepted)}: {why}")]
        if unknown:
            return [Result(CHECK, m.name, False, f"could not check: {'; '.join(unknown)}")]
        return [Result(CHECK, m.name, True, f"refuses all {len(names)} site-CA client certificates "
                                            f"(kubelet, kube-proxy, admin, ...)")]
    return [Result(CHECK, members[0].name, False, "no etcd member answered")]
