"""SPDX 2.3 JSON software bill of materials of a bundle: every binary, RPM and image with its hash."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional
from urllib.parse import quote

from bundler.suppliers import normalize
from contract.errors import Error
from contract.version import __version__


@dataclass(frozen=True)
class Item:
    """One component as the SBOM lists it."""

    kind: str  # binary | rpm | image | installer
    name: str
    version: str
    sha256: str
    download: str  # where it came from (upstream, not the mirror)
    purl: str
    supplier: Optional[str] = None  # SPDX form, "Organization: ..." (bundler.suppliers); required by document()
    comment: Optional[str] = None
    extra: Dict[str, str] = field(default_factory=dict)


def binary_purl(name: str, version: str, url: str) -> str:
    return f"pkg:generic/{quote(name)}@{quote(version)}?download_url={quote(url, safe='')}"


def rpm_purl(name: str, epoch: Optional[str], version: str, release: str, arch: str, vendor: str) -> str:
    q = f"arch={arch}" + (f"&epoch={epoch}" if epoch and epoch != "0" else "")
    return f"pkg:rpm/{quote(vendor)}/{quote(name)}@{quote(version)}-{quote(release)}?{q}"


def image_purl(registry: str, repository: str, tag: Optional[str], digest: str) -> str:
    last = repository.rsplit("/", 1)[-1]
    q = f"repository_url={quote(registry + '/' + repository, safe='/')}"
    if tag:
        q += f"&tag={quote(tag)}"
    return f"pkg:oci/{quote(last)}@{quote(digest, safe='')}?{q}"


def _spdx_id(kind: str, name: str, n: int) -> str:
    return f"SPDXRef-{kind}-{re.sub(r'[^A-Za-z0-9.-]', '-', name)}-{n}"


def document(bundle_name: str, bundle_version: str, created: str, items: Iterable[Item]) -> dict:
    """The SPDX document as a dict (deterministic for the same inputs)."""
    items = sorted(items, key=lambda i: (i.kind, i.name, i.version, i.sha256))
    seed = hashlib.sha256(json.dumps([bundle_name, bundle_version, created,
                                      [(i.kind, i.name, i.sha256) for i in items]]).encode()).hexdigest()
    packages: List[dict] = []
    rels = []
    missing = [f"{i.kind} {i.name}" for i in items if not i.supplier]
    if missing:  # NTIA minimum elements: every component names its supplier
        raise Error(f"{len(missing)} SBOM component(s) have no supplier", context="writing the SBOM",
                    details=missing[:20], hint="name a `supplier` for them in the spec")
    for n, it in enumerate(items):
        sid = _spdx_id(it.kind, it.name, n)
        pkg = {
            "SPDXID": sid,
            "name": it.name,
            "versionInfo": it.version,
            "downloadLocation": it.download or "NOASSERTION",
            "filesAnalyzed": False,
            "supplier": normalize(it.supplier),
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": {"binary": "ARCHIVE", "rpm": "INSTALL", "image": "CONTAINER",
                                      "installer": "APPLICATION"}.get(it.kind, "OTHER"),
            "checksums": [{"algorithm": "SHA256", "checksumValue": it.sha256}],
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": it.purl}],
        }
        notes = [f"kind={it.kind}"] + [f"{k}={v}" for k, v in sorted(it.extra.items())]
        if it.comment:
            notes.append(it.comment)
        pkg["comment"] = "; ".join(notes)
        packages.append(pkg)
        rels.append({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                     "relatedSpdxElement": sid})
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{bundle_name}-{bundle_version}",
        "documentNamespace": f"https://k8s-offline.invalid/spdx/{bundle_name}-{bundle_version}-{seed[:16]}",
        "creationInfo": {"created": created, "creators": [f"Tool: k8s-offline-{__version__}"]},
        "packages": packages,
        "relationships": rels,
    }


def to_bytes(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
