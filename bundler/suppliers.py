"""Who supplies each SBOM component (NTIA minimum element): the spec's `supplier`, else a default per upstream."""

from __future__ import annotations

import zipfile
from email.parser import HeaderParser
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

PROJECT = "Organization: The k8s-offline project"  # what this project builds itself (the static installer)
KUBERNETES = "Organization: The Kubernetes Authors"
DOCKER = "Organization: Docker Inc."
COREOS = "Organization: CoreOS, Inc."

# release file hosts, and GitHub owners (github.com/<owner>/...) of the upstream projects
_URL_HOSTS = {"dl.k8s.io": KUBERNETES, "download.docker.com": DOCKER, "mirror.centos.org": "Organization: CentOS",
              "vault.centos.org": "Organization: CentOS"}
_GITHUB_OWNERS = {
    "kubernetes": KUBERNETES,
    "coreos": COREOS,
    "etcd-io": "Organization: The etcd Authors",
    "flannel-io": "Organization: The flannel Authors",
    "containernetworking": "Organization: The CNI Authors",
    "docker": DOCKER,
    "vmware": "Organization: VMware, Inc.",
    "goharbor": "Organization: The Harbor Authors",
}
# image repositories: registry, or registry/first path component
_IMAGE_PREFIXES = {
    "k8s.gcr.io": KUBERNETES,
    "registry.k8s.io": KUBERNETES,
    "gcr.io/google_containers": KUBERNETES,
    "gcr.io/google-containers": KUBERNETES,
    "quay.io/coreos": COREOS,
    "docker.io/coredns": "Organization: The CoreDNS Authors",
    "docker.io/library": "Organization: Docker Official Images",
}
# RPM vendors, as the repo hosts name them (bundler.assemble.VENDORS)
RPM_VENDORS = {"centos": "Organization: CentOS", "docker": DOCKER}


def normalize(text: str) -> str:
    """An SPDX supplier: 'Person: ...' or 'Organization: ...' as written, anything else as an organization."""
    text = text.strip()
    if text.startswith(("Person:", "Organization:")):
        return text
    return f"Organization: {text}"


def for_url(url: str, spec_value: Optional[str] = None) -> str:
    """The supplier of a file downloaded from `url` (the upstream URL, not a mirror's)."""
    if spec_value:
        return normalize(spec_value)
    parts = urlparse(url)
    host = (parts.hostname or "").lower()
    if host == "github.com":
        owner = parts.path.strip("/").split("/", 1)[0].lower()
        return _GITHUB_OWNERS.get(owner, f"Organization: {owner} (github.com/{owner})" if owner else
                                  "Organization: github.com")
    if host == "storage.googleapis.com" and parts.path.startswith("/kubernetes-release/"):
        return KUBERNETES
    return _URL_HOSTS.get(host, f"Organization: {host or url}")


def for_image(registry: str, repository: str, spec_value: Optional[str] = None) -> str:
    """The supplier of an image, from the registry and its first path component."""
    if spec_value:
        return normalize(spec_value)
    first = repository.split("/", 1)[0]
    for key in (f"{registry}/{first}", registry):
        if key in _IMAGE_PREFIXES:
            return _IMAGE_PREFIXES[key]
    return f"Organization: {registry}/{first}" if "/" in repository else f"Organization: {registry}"


def for_rpm(vendor: str, spec_value: Optional[str] = None) -> str:
    """The supplier of an RPM of a repo whose vendor is `vendor` (the repo's name when its host is unknown)."""
    if spec_value:
        return normalize(spec_value)
    return RPM_VENDORS.get(vendor, f"Organization: {vendor}")


def for_wheel(path: Path, name: str) -> str:
    """The supplier of a Python wheel: the Author (or Maintainer, or their e-mail names) of its METADATA."""
    fields = {}
    try:
        with zipfile.ZipFile(path) as z:
            meta = next((n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1), None)
            if meta is not None:
                fields = HeaderParser().parsestr(z.read(meta).decode("utf-8", "replace"))
    except (OSError, zipfile.BadZipFile):
        fields = {}
    for key in ("Author", "Maintainer", "Author-email", "Maintainer-email"):
        value = (fields.get(key) or "").strip() if fields else ""
        if value and value.upper() != "UNKNOWN":
            if key.endswith("-email"):  # 'Name <mail>, Other <mail>' -> 'Name, Other'
                value = ", ".join(p.split("<", 1)[0].strip().strip('"') or p.strip() for p in value.split(","))
            return f"Organization: {value}"
    return f"Organization: the {name} maintainers (PyPI)"
