"""Cluster verification from the control host over HTTPS with the site's client certificates (no etcdctl,
no kubectl needed here): etcd health per member, /healthz through the VIP, componentstatuses, leaders, nodes.

Also the small control-side probes apply needs: the registry's missing images, the flannel v2 key.
"""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Tuple, Union

import requests

from contract.errors import Error
from installer.hosts.connector import DEFAULT_PARALLEL
from installer.inventory import Inventory
from installer.pki import Pki

TIMEOUT = 3.0
LEADER_ANNOTATION = "control-plane.alpha.kubernetes.io/leader"


@dataclass(frozen=True)
class Result:
    """One check: what, where, healthy or not, and why."""

    name: str
    target: str
    ok: bool
    detail: str

    @property
    def status(self) -> str:
        return "ok" if self.ok else "FAIL"

    def line(self) -> str:
        return f"{self.status:<5} {self.name:<24} {self.target}: {self.detail}"


@dataclass
class Report:
    """All check results."""

    results: List[Result] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "results": [dict(asdict(r), status=r.status) for r in self.results]}

    def text(self) -> str:
        head = "cluster healthy" if self.ok else f"{sum(not r.ok for r in self.results)} check(s) failed"
        return "\n".join([r.line() for r in self.results] + [head])


# ------------------------------------------------------------------ HTTPS with client certificates


def client_tls(pki: Pki, name: str) -> dict:
    """Client certificate `name`; the server is verified with the CA that signs it (etcd's own for etcd)."""
    ca = pki.etcd_ca_name() if name.startswith("etcd-") else "ca"
    return {"cert": (str(pki.crt_path(name)), str(pki.key_path(name))), "verify": str(pki.crt_path(ca)),
            "timeout": TIMEOUT}


def _get(session: requests.Session, url: str, pki: Pki, cert: str) -> Tuple[Optional[requests.Response], str]:
    try:
        return session.get(url, **client_tls(pki, cert)), ""
    except requests.RequestException as e:
        return None, _why(e)


def _why(e: Exception) -> str:
    text = str(e)
    for marker in ("Connection refused", "timed out", "No route to host", "CERTIFICATE_VERIFY_FAILED",
                   "certificate", "Name or service not known"):
        if marker in text:
            return marker.lower() if marker != "CERTIFICATE_VERIFY_FAILED" else "certificate verify failed"
    return type(e).__name__


def etcd_health(inv: Inventory, pki: Pki, session: requests.Session) -> List[Result]:
    """GET /health on every member's client URL with the etcd-healthcheck client certificate."""
    return etcd_health_of(pki, session, {m.name: m.address for m in inv.etcd_members})


def etcd_health_of(pki: Pki, session: requests.Session, members: Mapping[str, str]) -> List[Result]:
    """etcd_health of the members given as {name: address} (e.g. recorded ones outside the inventory's group)."""
    out = []
    for name, address in members.items():
        url = f"https://{address}:2379/health"
        r, why = _get(session, url, pki, "etcd-healthcheck")
        if r is None:
            out.append(Result("etcd health", name, False, why))
            continue
        try:
            healthy = str(r.json().get("health")) == "true"
        except ValueError:
            healthy = False
        out.append(Result("etcd health", name, r.status_code == 200 and healthy,
                          "healthy" if healthy else f"HTTP {r.status_code}: {r.text.strip()[:120]}"))
    return out


def all_ok(results: Sequence[Result]) -> Tuple[bool, str]:
    bad = [f"{r.target}: {r.detail}" for r in results if not r.ok]
    return not bad, "; ".join(bad) or f"{len(results)} healthy"


def apiserver_healthz(inv: Inventory, pki: Pki, session: requests.Session, address: str,
                      port: int) -> Tuple[bool, str]:
    """/healthz of one apiserver (or through the VIP) with the admin client certificate."""
    r, why = _get(session, f"https://{address}:{port}/healthz", pki, "admin")
    if r is None:
        return False, why
    return r.status_code == 200 and r.text.strip() == "ok", f"HTTP {r.status_code}: {r.text.strip()[:80]}"


def _api(inv: Inventory, pki: Pki, session: requests.Session, path: str) -> Tuple[Optional[dict], str]:
    url = f"https://{inv.cluster.vip}:{inv.cluster.lb_port}{path}"
    r, why = _get(session, url, pki, "admin")
    if r is None:
        return None, why
    if r.status_code != 200:
        return None, f"HTTP {r.status_code}: {r.text.strip()[:120]}"
    try:
        return r.json(), ""
    except ValueError:
        return None, "not JSON"


def nodes_ready(inv: Inventory, pki: Pki, session: requests.Session, names: Sequence[str]) -> Tuple[bool, str]:
    """Whether every named node is registered and Ready."""
    doc, why = _api(inv, pki, session, "/api/v1/nodes")
    if doc is None:
        return False, why
    ready = {}
    for n in doc.get("items") or []:
        conds = {c.get("type"): c.get("status") for c in (n.get("status") or {}).get("conditions") or []}
        ready[n.get("metadata", {}).get("name")] = conds.get("Ready") == "True"
    bad = [n for n in names if not ready.get(n)]
    if bad:
        return False, "not Ready: " + ", ".join(f"{n} ({'not registered' if n not in ready else 'NotReady'})"
                                                for n in bad)
    return True, f"{len(names)} Ready"


def leader(inv: Inventory, pki: Pki, session: requests.Session, component: str) -> Tuple[Optional[str], str]:
    """The holder of a component's leader lock (endpoints annotation in kube-system)."""
    doc, why = _api(inv, pki, session, f"/api/v1/namespaces/kube-system/endpoints/{component}")
    if doc is None:
        return None, why
    raw = ((doc.get("metadata") or {}).get("annotations") or {}).get(LEADER_ANNOTATION)
    if not raw:
        return None, "no leader annotation"
    try:
        record = json.loads(raw)
    except ValueError:
        return None, "unreadable leader annotation"
    return record.get("holderIdentity"), f"renewed {record.get('renewTime', '?')}"


def run_all(inv: Inventory, pki: Pki, session: requests.Session, connector_for=None,
            max_parallel: int = DEFAULT_PARALLEL) -> Report:
    """Every check; none raises, each failure is a result. With connector_for (SSH to the hosts) also the pod
    network and the nodes' image pulls (installer/podnet.py). The groups are independent (the API and etcd
    over HTTPS from here, etcd's v3 authentication, the pod network, the image pulls: each on other hosts or
    other connections), so they run at once; the report lists them in this fixed order."""
    groups: List[Callable[[], List[Result]]] = [lambda: _api_checks(inv, pki, session)]
    if connector_for is not None:
        from installer import (
            etcd_auth,  # builds on this module's Result
            podnet,  # podnet builds on this module's Result
        )

        groups += [lambda: etcd_auth.check(inv, pki, connector_for),
                   lambda: podnet.pod_network(inv, connector_for, max_parallel),
                   lambda: podnet.image_pulls(inv, connector_for, max_parallel)]
    rep = Report()
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        for results in pool.map(lambda g: g(), groups):
            rep.results += results
    return rep


def _api_checks(inv: Inventory, pki: Pki, session: requests.Session) -> List[Result]:
    """etcd health, etcd refusing the site CA, /healthz through the VIP, componentstatuses, leaders, nodes."""
    results = etcd_health(inv, pki, session)
    from installer import etcd_access  # builds on this module's Result

    results += etcd_access.refused(inv, pki, session)
    vip = f"{inv.cluster.vip}:{inv.cluster.lb_port}"
    ok, detail = apiserver_healthz(inv, pki, session, inv.cluster.vip, inv.cluster.lb_port)
    results.append(Result("healthz via VIP", vip, ok, detail))
    doc, why = _api(inv, pki, session, "/api/v1/componentstatuses")
    if doc is None:
        results.append(Result("componentstatuses", vip, False, why))
    else:
        for item in doc.get("items") or []:
            conds = item.get("conditions") or []
            healthy = any(c.get("type") == "Healthy" and c.get("status") == "True" for c in conds)
            msg = "; ".join(str(c.get("message") or c.get("error") or "") for c in conds).strip()
            results.append(Result("componentstatus", item.get("metadata", {}).get("name", "?"), healthy,
                                  "Healthy" if healthy else msg or "unhealthy"))
    for comp in ("kube-controller-manager", "kube-scheduler"):
        holder, detail = leader(inv, pki, session, comp)
        results.append(Result(f"leader {comp}", vip, holder is not None,
                              f"{holder} ({detail})" if holder else detail))
    ok, detail = nodes_ready(inv, pki, session, [n.name for n in inv.nodes])
    results.append(Result("nodes Ready", vip, ok, detail))
    return results


# ------------------------------------------------------------------ flannel's network in etcd v2


def _v2_url(inv: Inventory, address: str) -> str:
    return f"https://{address}:2379/v2/keys{inv.cluster.flannel_prefix.rstrip('/')}/config"


def flannel_config(inv: Inventory, pki: Pki, session: requests.Session) -> Optional[str]:
    """The current value of <flannel_prefix>/config, or None (missing, or etcd not reachable)."""
    for m in inv.etcd_members:
        r, _ = _get(session, _v2_url(inv, m.address), pki, "etcd-healthcheck")
        if r is None:
            continue
        if r.status_code == 404:
            return None
        if r.status_code == 200:
            try:
                return r.json()["node"]["value"]
            except (ValueError, KeyError, TypeError):
                return None
    return None


def etcd_peer_urls(inv: Inventory, pki: Pki, session: requests.Session) -> Optional[Tuple[str, ...]]:
    """The peer URLs in the running cluster's member list (GET /v2/members of the first member that answers
    with one; unstarted entries included), or None when none does."""
    for m in inv.etcd_members:
        r, _ = _get(session, f"https://{m.address}:2379/v2/members", pki, "etcd-healthcheck")
        if r is None or r.status_code != 200:
            continue
        try:
            return tuple(sorted(u for member in r.json()["members"] for u in member.get("peerURLs") or ()))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return None


def put_flannel_config(inv: Inventory, pki: Pki, session: requests.Session, value: str) -> None:
    """Write the network config through the first member that answers (v2 API: flannel 0.10 reads only v2)."""
    errors = []
    for m in inv.etcd_members:
        try:
            r = session.put(_v2_url(inv, m.address), data={"value": value}, **client_tls(pki, "etcd-healthcheck"))
        except requests.RequestException as e:
            errors.append(f"{m.name}: {_why(e)}")
            continue
        if r.status_code in (200, 201):
            return
        errors.append(f"{m.name}: HTTP {r.status_code}: {r.text.strip()[:160]}")
    raise Error("cannot write flannel's network config to etcd", context="writing the etcd v2 key",
                details=errors, hint="etcd must run with --enable-v2=true (ETCD_ENABLE_V2) and be healthy")


# ------------------------------------------------------------------ the registry


def registry_base(inv: Inventory) -> str:
    """The registry URL; by address when its hostname does not resolve here (the site's DNS may not cover it)."""
    r = inv.registry
    scheme = "http" if r.insecure else "https"
    host = r.hostname
    try:
        socket.getaddrinfo(host, r.port)
    except OSError:
        host = r.address
    return f"{scheme}://{host}:{r.port}"


def _credentials(inv: Inventory, password: Optional[str], verify: Union[bool, str, None]):
    """(password, verify): the given ones (install mode: generated password, site CA), else the inventory's."""
    from installer.registry.client import read_password

    r = inv.registry
    if password is None and r.password_file:
        password = read_password(r.password_file)
    return password, verify if verify is not None else (r.ca_file or True)


def registry_client(inv: Inventory, session: requests.Session, *, password: Optional[str] = None,
                    verify: Union[bool, str, None] = None):
    from installer.registry.client import RegistryClient

    password, verify = _credentials(inv, password, verify)
    return RegistryClient(registry_base(inv), session, username=inv.registry.username if password else None,
                          password=password, verify=verify, timeout=30)


def images_missing(inv: Inventory, layout_dir: Path, naming: str, session: requests.Session, *,
                   password: Optional[str] = None,
                   verify: Union[bool, str, None] = None) -> Tuple[Tuple[str, ...], int]:
    """(seeded references whose tag does not point at the bundle's digest, number of images)."""
    from installer.registry.seed import Layout

    client = registry_client(inv, session, password=password, verify=verify)
    images = Layout(layout_dir).images(inv.registry.project, naming)
    missing = []
    for img in images:
        ref = img.tag or img.digest
        if client.manifest_digest(img.repo, ref) != img.digest:
            missing.append(f"{img.repo}:{img.tag}" if img.tag else f"{img.repo}@{img.digest}")
    return tuple(missing), len(images)


def ensure_project(inv: Inventory, session: requests.Session, *, password: Optional[str] = None,
                   verify: Union[bool, str, None] = None) -> Tuple[bool, str]:
    """Create the Harbor project when the registry is Harbor; a plain registry needs none.
    (whether the registry is Harbor, what was done)."""
    from installer.registry.harbor import HarborAPI, NoHarborAPI

    r = inv.registry
    password, verify = _credentials(inv, password, verify)
    api = HarborAPI(registry_base(inv), session, username=r.username if password else None, password=password,
                    verify=verify)
    try:
        api.api()
    except NoHarborAPI:
        return False, "skipped: not Harbor (no /api/systeminfo): a plain registry has no projects"
    res = api.ensure_project(r.project, r.public)
    return True, f"project {r.project} " + ("created" if res.created else "exists")
