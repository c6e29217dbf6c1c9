"""Secrets written before the apiservers had the encryption config are re-written once, so they are encrypted.

kube-apiserver encrypts a Secret when it writes it; one stored before `--experimental-encryption-provider-config`
stays plaintext in etcd until something writes it again (the documented migration is `kubectl get secrets
--all-namespaces -o json | kubectl replace -f -`). apply marks SECRETS_UNIT pending on the control host before
it writes the encryption config to a master (so a crash in between still re-writes them on the next run); once
every master runs with it (the step sits after the masters phase) the control host reads every Secret through
the VIP with the admin certificate and PUTs it back unchanged, retrying on a conflict. The mark is cleared only
when all of them were written.
"""

from __future__ import annotations

from typing import Tuple

import requests

from contract.errors import Error
from installer import checks
from installer.inventory import Inventory
from installer.pki import Pki

SECRETS_UNIT = "secrets-rewrite"  # pending pseudo-unit on the control host
CONFLICT_RETRIES = 3
TIMEOUT = 15.0


def _tls(pki: Pki) -> dict:
    return dict(checks.client_tls(pki, "admin"), timeout=TIMEOUT)


def _fail(what: str, detail: str) -> Error:
    return Error(f"cannot re-write the secrets: {what}", context="encrypting the secrets stored before the "
                 "encryption config (re-writing each through the apiserver)", details=[detail],
                 hint="check the apiservers (installer check); the re-write stays pending and the next apply "
                      "repeats it")


def rewrite(inv: Inventory, pki: Pki, session: requests.Session) -> Tuple[int, str]:
    """PUT every Secret back as read; returns (count, summary). Raises Error when any could not be written."""
    base = f"https://{inv.cluster.vip}:{inv.cluster.lb_port}"
    try:
        r = session.get(f"{base}/api/v1/secrets", **_tls(pki))
    except requests.RequestException as e:
        raise _fail("listing them failed", f"{type(e).__name__}: {e}") from None
    if r.status_code != 200:
        raise _fail("listing them failed", f"HTTP {r.status_code}: {r.text.strip()[:200]}")
    items = (r.json() or {}).get("items") or []
    done = 0
    for item in items:
        meta = item.get("metadata") or {}
        ns, name = meta.get("namespace", "default"), meta.get("name", "")
        url = f"{base}/api/v1/namespaces/{ns}/secrets/{name}"
        obj = dict(item, apiVersion="v1", kind="Secret")
        for _ in range(CONFLICT_RETRIES):
            try:
                w = session.put(url, json=obj, **_tls(pki))
            except requests.RequestException as e:
                raise _fail(f"{ns}/{name}", f"{type(e).__name__}: {e}") from None
            if w.status_code == 409:  # changed meanwhile: write the current version
                g = session.get(url, **_tls(pki))
                if g.status_code == 404:
                    break  # deleted meanwhile: nothing to encrypt
                obj = dict(g.json(), apiVersion="v1", kind="Secret")
                continue
            if w.status_code == 404:
                break
            if w.status_code not in (200, 201):
                raise _fail(f"{ns}/{name}", f"HTTP {w.status_code}: {w.text.strip()[:200]}")
            done += 1
            break
        else:
            raise _fail(f"{ns}/{name}", f"still conflicting after {CONFLICT_RETRIES} attempts")
    return done, f"{done} secret(s) re-written (stored encrypted from now on)"
