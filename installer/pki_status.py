"""`installer certs check`: every certificate of the state directory against the inventory."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from cryptography import x509

from contract.errors import Error
from installer.inventory import Inventory
from installer.pki import HINT_CA, Clock, Pki, utcnow
from installer.pki_specs import ETCD_CA, SITE_CA
from installer.pki_x509 import days_left, mismatch, sans_text


@dataclass(frozen=True)
class CertStatus:
    """One certificate as `check` sees it."""

    name: str
    subject: str
    sans: Tuple[str, ...]
    issuer: str
    not_after: Optional[dt.datetime]
    days_left: Optional[int]
    status: str  # ok | expiring | mismatch | missing
    reason: str = ""


def check(state_dir: Path, inv: Inventory, clock: Clock = utcnow) -> List[CertStatus]:
    """Every certificate of the state directory against the inventory: names, issuer, days left."""
    p = Pki(state_dir, clock)
    now = clock()
    renew = inv.cluster.renew_within_days
    ca_cert = p.load_cert(SITE_CA)
    if ca_cert is None:
        raise Error(f"no site CA in {p.dir}", context="checking certificates",
                    hint="run the pki step (installer render/apply) first")
    cas = {SITE_CA: ca_cert}
    out = [_status(SITE_CA, ca_cert, now, renew, None)]
    if p.etcd_ca_name() == ETCD_CA:
        cas[ETCD_CA] = p.load_cert(ETCD_CA)
        if cas[ETCD_CA] is None:
            raise Error(f"{p.crt_path(ETCD_CA)} is unreadable", context="checking certificates", hint=HINT_CA)
        out.append(_status(ETCD_CA, cas[ETCD_CA], now, renew, None))
    for spec in p.specs(inv):
        cert = p.load_cert(spec.name)
        if cert is None:
            out.append(CertStatus(spec.name, f"CN={spec.cn}", (), "", None, None, "missing", "no certificate"))
            continue
        why = mismatch(spec, cert, cas[spec.ca])
        if why is None and not p.key_matches(spec.name, cert):
            why = "key missing or does not match"
        out.append(_status(spec.name, cert, now, renew, why))
    return out


def _status(name: str, cert: x509.Certificate, now: dt.datetime, renew: int, why: Optional[str]) -> CertStatus:
    left = days_left(cert, now)
    if why:
        status = "mismatch"
    elif left <= renew:
        status, why = "expiring", f"expires in {left} days"
    else:
        status, why = "ok", ""
    return CertStatus(name, cert.subject.rfc4514_string(), sans_text(cert), cert.issuer.rfc4514_string(),
                      cert.not_valid_after_utc, left, status, why)
