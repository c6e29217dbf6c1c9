"""Addon manifests (DNS, dashboard, metrics): rendered from the bundle's templates for this site, written to the
first master and applied there with `kubectl apply`.

Applying is tracked in the state dir's pending set under the pseudo unit ADDONS_UNIT: set before a manifest is
written, cleared only after `kubectl apply` exited 0, so written-but-unapplied manifests are applied next run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping

import jinja2
import yaml

from contract.errors import Error
from installer.hosts.connector import Connector
from installer.inventory import Inventory
from installer.plan_rules import ADDONS_DIR, ADDONS_UNIT
from installer.render import PATHS, File
from installer.state import Pending

ADMIN_KUBECONFIG = PATHS["admin_kubeconfig"]
DNS_TEMPLATES = {"kube-dns": "kube-dns.yaml.j2", "coredns": "coredns.yaml.j2"}


def selected(templates: Path, inv: Inventory) -> list:
    """The templates this site installs: every addon, and only the DNS the inventory chose."""
    other_dns = {t for k, t in DNS_TEMPLATES.items() if k != inv.cluster.dns_addon}
    return sorted(p for p in Path(templates).glob("*.yaml.j2") if p.name not in other_dns)


def render(templates: Path, inv: Inventory, images: Mapping[str, str]) -> Dict[str, str]:
    """{manifest file name: YAML text} with every image pointing at the seeded registry names."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    ctx = {"cluster": {"dns_ip": inv.cluster.dns_ip, "domain": inv.cluster.domain}, "images": dict(images)}
    out = {}
    for path in selected(templates, inv):
        try:
            text = env.get_template(path.name).render(**ctx)
        except jinja2.UndefinedError as e:
            raise Error(f"addon manifest {path.name} needs a value the installer does not have: {e.message}",
                        context="rendering addon manifests",
                        hint="the bundle must carry the image for every addon it ships (see `bundler inspect`)") \
                from None
        try:
            list(yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))  # libyaml: every run
        except yaml.YAMLError as e:
            raise Error(f"addon manifest {path.name} is not valid YAML after rendering: {e}",
                        context="rendering addon manifests") from None
        out[path.name[: -len(".j2")]] = text
    return out


# ------------------------------------------------------------------ on the first master

APPLY_TIMEOUT = 300
OUTPUT_LINES = 20  # of kubectl's output kept in an error
UNREACHABLE_MARKERS = ("unable to connect to the server", "connection refused", "i/o timeout", "no route to host",
                       "tls handshake timeout", "was refused")


def files(templates: Path, inv: Inventory, images: Mapping[str, str]) -> Dict[str, File]:
    """{ADDONS_DIR/<name>.yaml: File} for the first master; nothing when the bundle ships no templates."""
    if not Path(templates).is_dir() or not inv.masters:
        return {}
    return {f"{ADDONS_DIR}/{name}": File(text.encode(), 0o644) for name, text in render(templates, inv, images).items()}


def is_manifest(path: str) -> bool:
    """Whether a put writes an addon manifest (which then stays pending until `kubectl apply` succeeded)."""
    return path.startswith(ADDONS_DIR + "/")


def kubectl_apply(conn: Connector, host: str, command: str, pending: Pending) -> str:
    """Run `kubectl apply` on the master; clear the pending mark only when it exits 0, else raise with its output.

    The mark was set before the manifests were written, so a failure here (or a crash before it) leaves it set
    and the next apply runs this step again even though the files on the host are already up to date."""
    r = conn.run(command, timeout=APPLY_TIMEOUT, check=False)
    output = "\n".join(t.strip() for t in (r.stdout, r.stderr) if t.strip())
    if r.rc != 0:
        lines = output.splitlines()[-OUTPUT_LINES:] or ["(kubectl printed nothing)"]
        if any(m in output.lower() for m in UNREACHABLE_MARKERS):
            hint = (f"kubectl on {host} cannot reach the apiserver named in {ADMIN_KUBECONFIG} (the VIP): check "
                    f"kube-apiserver (journalctl -u kube-apiserver) and haproxy/keepalived; the manifests stay "
                    f"pending and the next apply applies them")
        else:
            hint = (f"the apiserver rejected a manifest (kubectl's output above names it); the manifests are in "
                    f"{ADDONS_DIR} on {host} and stay pending: the next apply applies them again")
        raise Error(f"{host}: `{command}` failed (exit status {r.rc})",
                    context=f"applying the addon manifests on {host}",
                    details=[f"kubectl: {ln}" for ln in lines], hint=hint)
    pending.done(host, ADDONS_UNIT)
    applied = [ln for ln in r.stdout.splitlines() if ln.strip()]
    return f"{len(applied)} object(s) applied" if applied else "applied"
