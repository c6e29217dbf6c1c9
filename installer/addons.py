"""Addon manifests (DNS, dashboard, metrics) rendered from the bundle's templates for this site."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping

import jinja2
import yaml

from installer.errors import Error
from installer.inventory import Inventory

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
            list(yaml.safe_load_all(text))
        except yaml.YAMLError as e:
            raise Error(f"addon manifest {path.name} is not valid YAML after rendering: {e}",
                        context="rendering addon manifests") from None
        out[path.name[: -len(".j2")]] = text
    return out
