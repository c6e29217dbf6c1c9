"""Cordon and drain a node through the API before its kubelet is replaced, uncordon it once it is Ready again.

What `kubectl drain --ignore-daemonsets --delete-local-data --force` does, from the control host with the
admin certificate through the VIP: mark the node unschedulable (a merge patch of spec.unschedulable), then
evict (policy/v1beta1 Eviction, which honours PodDisruptionBudgets: a 429 is retried until the deadline) every
pod bound to it except DaemonSet pods (their controller would put them back at once) and mirror pods (the
kubelet's static pods), and wait until the evicted pods are gone. Pods without a controller are evicted too
and do not come back: the step's detail names them. After the node's Ready gate the uncordon step clears
spec.unschedulable again. The cordon also sets the annotation MARK, which the uncordon removes: a run that
stopped in between leaves the node cordoned *and marked*, and the next plan (gather reads the marked nodes)
uncordons it; a node an operator cordoned by hand carries no mark and is left alone.
"""

from __future__ import annotations

import time
from typing import Callable, List, Tuple

import requests

from contract.errors import Error
from installer import checks
from installer.inventory import Inventory

MIRROR = "kubernetes.io/config.mirror"
MARK = "k8s-offline.io/cordoned-for-upgrade"  # set with the cordon, removed with the uncordon
TIMEOUT = 120.0
PAUSE = 1.0


def _base(inv: Inventory) -> str:
    return f"https://{inv.cluster.vip}:{inv.cluster.lb_port}"


def _fail(node: str, what: str, detail: str) -> Error:
    return Error(f"{node}: {what}", context=f"draining {node} before its kubelet is replaced",
                 details=[detail], hint="check the apiserver (installer check); the next apply drains again, and "
                                        "uncordons the node once it is upgraded")


TRIES = 3  # an apiserver that just restarted (the masters are upgraded right before) may answer once oddly


def _request(session: requests.Session, pki, method: str, url: str, node: str, what: str,
             sleep: Callable[[float], None] = time.sleep, **kw) -> requests.Response:
    """One API call; a connection error, 5xx or a bare 400 (no Status body) is tried again, TRIES in all."""
    for attempt in range(1, TRIES + 1):
        try:
            r = session.request(method, url, **checks.client_tls(pki, "admin"), **kw)
        except requests.RequestException as e:
            if attempt == TRIES:
                raise _fail(node, what, f"{type(e).__name__}: {e}") from None
        else:
            json_body = r.headers.get("Content-Type", "").startswith("application/json")
            if not (r.status_code >= 500 or (r.status_code == 400 and not json_body)) or attempt == TRIES:
                return r
        sleep(PAUSE)
    raise AssertionError("unreachable")


def _detail(r: requests.Response) -> str:
    text = " ".join(r.text.split())
    return f"HTTP {r.status_code}: {text[-300:] if len(text) > 300 else text}"


def set_unschedulable(inv: Inventory, pki, session: requests.Session, node: str, value: bool) -> None:
    what = "cordoning it" if value else "uncordoning it"
    r = _request(session, pki, "PATCH", f"{_base(inv)}/api/v1/nodes/{node}", node, what,
                 json={"metadata": {"annotations": {MARK: "true" if value else None}},
                       "spec": {"unschedulable": value}}, headers={"Content-Type": "application/merge-patch+json"})
    if r.status_code != 200:
        raise _fail(node, what + " failed", _detail(r))


def _pods(inv: Inventory, pki, session: requests.Session, node: str) -> List[dict]:
    r = _request(session, pki, "GET", f"{_base(inv)}/api/v1/pods", node, "listing its pods",
                 params={"fieldSelector": f"spec.nodeName={node}"})
    if r.status_code != 200:
        raise _fail(node, "listing its pods failed", _detail(r))
    return [p for p in (r.json() or {}).get("items") or [] if (p.get("spec") or {}).get("nodeName") == node]


def _kept(pod: dict) -> bool:
    meta = pod.get("metadata") or {}
    if MIRROR in (meta.get("annotations") or {}):
        return True
    return any(o.get("kind") == "DaemonSet" and o.get("controller") for o in meta.get("ownerReferences") or [])


def _name(pod: dict) -> Tuple[str, str]:
    meta = pod.get("metadata") or {}
    return meta.get("namespace", "default"), meta.get("name", "")


def drain(inv: Inventory, pki, session: requests.Session, node: str, timeout: float = TIMEOUT,
          sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> str:
    """Cordon, evict, wait; the summary for the journal."""
    set_unschedulable(inv, pki, session, node, True)
    deadline = clock() + timeout
    pods = _pods(inv, pki, session, node)
    evict = [p for p in pods if not _kept(p)]
    bare = ["%s/%s" % _name(p) for p in evict if not (p.get("metadata") or {}).get("ownerReferences")]
    pending = {_name(p) for p in evict}
    while pending:
        for ns, name in sorted(pending):
            body = {"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}}
            r = _request(session, pki, "POST", f"{_base(inv)}/api/v1/namespaces/{ns}/pods/{name}/eviction", node,
                         f"evicting {ns}/{name}", json=body)
            if r.status_code not in (200, 201, 404, 429):
                raise _fail(node, f"evicting {ns}/{name} failed", _detail(r))
        left = {_name(p) for p in _pods(inv, pki, session, node)} & pending
        if not left:
            break
        if clock() > deadline:
            raise _fail(node, f"{len(left)} pod(s) still there after {timeout:.0f} s",
                        ", ".join(f"{ns}/{n}" for ns, n in sorted(left)))
        pending = left
        sleep(PAUSE)
    kept = len(pods) - len(evict)
    out = f"cordoned; {len(evict)} pod(s) evicted, {kept} kept (DaemonSet or mirror)"
    return out + (f"; without a controller, not coming back: {', '.join(bare)}" if bare else "")


def fresh_session(session: requests.Session) -> requests.Session:
    """A session of its own (the executor's: no connection kept from before the masters restarted)."""
    s = requests.Session()
    s.trust_env = getattr(session, "trust_env", False)
    return s


def uncordon(inv: Inventory, pki, session: requests.Session, node: str) -> str:
    set_unschedulable(inv, pki, session, node, False)
    return "schedulable again"


def marked(inv: Inventory, pki, session: requests.Session) -> Tuple[str, ...]:
    """Nodes this installer cordoned and did not uncordon yet (a run stopped in between); () if unknown."""
    doc, _ = checks._api(inv, pki, session, "/api/v1/nodes")
    return tuple(sorted(((n.get("metadata") or {}).get("name", "") for n in (doc or {}).get("items") or []
                         if MARK in ((n.get("metadata") or {}).get("annotations") or {}))))
