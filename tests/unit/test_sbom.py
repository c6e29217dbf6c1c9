"""SBOM: SPDX 2.3 shape, one package per component with sha256, purl and supplier, deterministic; valid for
spdx-tools and NTIA-minimum conformant for ntia-conformance-checker."""

import dataclasses
import json
import zipfile

import pytest

from bundler import sbom, suppliers
from contract.errors import Error
from tests.sbom_checks import problems

ITEMS = [
    sbom.Item("binary", "etcd", "3.3.1", "a" * 64, "https://github.com/coreos/etcd/x.tgz",
              sbom.binary_purl("etcd", "3.3.1", "https://github.com/coreos/etcd/x.tgz"),
              supplier=suppliers.for_url("https://github.com/coreos/etcd/x.tgz")),
    sbom.Item("rpm", "docker-ce", "3:18.09.1-3.el7", "b" * 64, "https://download.docker.com/x.rpm",
              sbom.rpm_purl("docker-ce", "3", "18.09.1", "3.el7", "x86_64", "docker"),
              supplier=suppliers.for_rpm("docker")),
    sbom.Item("image", "k8s.gcr.io/pause-amd64:3.1", "3.1", "c" * 64, "k8s.gcr.io/pause-amd64:3.1",
              sbom.image_purl("k8s.gcr.io", "pause-amd64", "3.1", "sha256:" + "c" * 64),
              supplier=suppliers.for_image("k8s.gcr.io", "pause-amd64")),
]


def test_spdx_document():
    doc = sbom.document("k8s", "1.10.3", "2026-01-01T00:00:00Z", ITEMS)
    assert doc["spdxVersion"] == "SPDX-2.3" and doc["dataLicense"] == "CC0-1.0"
    assert len(doc["packages"]) == 3 and len(doc["relationships"]) == 3
    ids = {p["SPDXID"] for p in doc["packages"]}
    assert len(ids) == 3 and all(r["relatedSpdxElement"] in ids for r in doc["relationships"])
    by_name = {p["name"]: p for p in doc["packages"]}
    assert by_name["docker-ce"]["externalRefs"][0]["referenceLocator"] == \
        "pkg:rpm/docker/docker-ce@18.09.1-3.el7?arch=x86_64&epoch=3"
    assert by_name["k8s.gcr.io/pause-amd64:3.1"]["externalRefs"][0]["referenceLocator"].startswith(
        "pkg:oci/pause-amd64@sha256%3Acccc")
    assert by_name["etcd"]["checksums"] == [{"algorithm": "SHA256", "checksumValue": "a" * 64}]
    again = sbom.document("k8s", "1.10.3", "2026-01-01T00:00:00Z", list(reversed(ITEMS)))
    assert sbom.to_bytes(doc) == sbom.to_bytes(again)


def test_every_package_names_its_supplier():
    doc = sbom.document("k8s", "1.10.3", "2026-01-01T00:00:00Z", ITEMS)
    by_name = {p["name"]: p["supplier"] for p in doc["packages"]}
    assert by_name == {"etcd": "Organization: CoreOS, Inc.", "docker-ce": "Organization: Docker Inc.",
                       "k8s.gcr.io/pause-amd64:3.1": "Organization: The Kubernetes Authors"}


def test_a_component_without_supplier_is_refused():
    items = ITEMS + [dataclasses.replace(ITEMS[0], name="mystery", supplier=None)]
    with pytest.raises(Error) as e:
        sbom.document("k8s", "1.10.3", "2026-01-01T00:00:00Z", items)
    assert e.value.details == ["binary mystery"] and "supplier" in e.value.hint


def test_document_passes_spdx_tools_and_the_ntia_checker(tmp_path):
    path = tmp_path / "sbom.spdx.json"
    path.write_bytes(sbom.to_bytes(sbom.document("k8s", "1.10.3", "2026-01-01T00:00:00Z", ITEMS)))
    assert problems(path) == []
    # the checkers do catch what the SBOM used to lack: a supplier
    doc = json.loads(path.read_text())
    doc["packages"][0]["supplier"] = "NOASSERTION"
    path.write_text(json.dumps(doc))
    assert problems(path) == ["ntia: not NTIA-minimum conformant: no supplier: 1 (author True, timestamp True, "
                              "relationships True)"]


@pytest.mark.parametrize("url,want", [
    ("https://dl.k8s.io/v1.10.3/kubernetes-server-linux-amd64.tar.gz", "Organization: The Kubernetes Authors"),
    ("https://storage.googleapis.com/kubernetes-release/release/v1.10.3/x.tgz",
     "Organization: The Kubernetes Authors"),
    ("https://github.com/coreos/flannel/releases/download/v0.10.0/f.tar.gz", "Organization: CoreOS, Inc."),
    ("https://github.com/containernetworking/plugins/releases/x.tgz", "Organization: The CNI Authors"),
    ("https://github.com/docker/compose/releases/download/1.18.0/docker-compose-Linux-x86_64",
     "Organization: Docker Inc."),
    ("https://github.com/vmware/harbor/releases/x.tgz", "Organization: VMware, Inc."),
    ("https://github.com/someone/tool/releases/x", "Organization: someone (github.com/someone)"),
    ("https://files.example.org/x.tgz", "Organization: files.example.org"),
])
def test_default_supplier_per_upstream_url(url, want):
    assert suppliers.for_url(url) == want


@pytest.mark.parametrize("registry,repository,want", [
    ("k8s.gcr.io", "pause-amd64", "Organization: The Kubernetes Authors"),
    ("quay.io", "coreos/flannel", "Organization: CoreOS, Inc."),
    ("docker.io", "coredns/coredns", "Organization: The CoreDNS Authors"),
    ("docker.io", "library/busybox", "Organization: Docker Official Images"),
    ("docker.io", "vmware/harbor-db", "Organization: docker.io/vmware"),
    ("registry.example.com", "app", "Organization: registry.example.com"),
])
def test_default_supplier_per_image_repository(registry, repository, want):
    assert suppliers.for_image(registry, repository) == want


def test_the_spec_supplier_wins_and_is_normalized():
    assert suppliers.for_url("https://dl.k8s.io/x", "ACME Corp") == "Organization: ACME Corp"
    assert suppliers.for_image("k8s.gcr.io", "pause", "Person: Jane Doe (jane@example.com)") == \
        "Person: Jane Doe (jane@example.com)"
    assert suppliers.for_rpm("centos") == "Organization: CentOS"
    assert suppliers.for_rpm("epel", "Organization: Fedora Project") == "Organization: Fedora Project"
    assert suppliers.for_rpm("epel") == "Organization: epel"


def _wheel(path, **fields):
    meta = "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n" + "".join(f"{k}: {v}\n" for k, v in fields.items())
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("demo-1.0.dist-info/METADATA", meta)
    return path


def test_wheel_supplier_comes_from_its_metadata(tmp_path):
    assert suppliers.for_wheel(_wheel(tmp_path / "a.whl", Author="Kenneth Reitz"), "demo") == \
        "Organization: Kenneth Reitz"
    assert suppliers.for_wheel(_wheel(tmp_path / "b.whl", **{"Author-email": '"Ann Lee" <a@x.org>, Bo <b@x.org>'}),
                               "demo") == "Organization: Ann Lee, Bo"
    assert suppliers.for_wheel(_wheel(tmp_path / "c.whl", Author="UNKNOWN"), "demo") == \
        "Organization: the demo maintainers (PyPI)"


def test_sbom_items_take_the_spec_supplier_else_the_upstream_default(tmp_path):
    from pathlib import Path

    from bundler import assemble
    from bundler import spec as spec_mod
    from bundler.lock import Lock, LockedBinary, LockedImage, LockedRpm

    text = (Path(__file__).resolve().parents[2] / "bundle-spec.yaml").read_text()
    text = text.replace("  - name: kubernetes-client\n", "  - name: kubernetes-client\n    supplier: ACME Mirror Ltd\n")
    (tmp_path / "spec.yaml").write_text(text)
    spec = spec_mod.load(tmp_path / "spec.yaml")
    repo = spec.rpms.repos[0]
    pause = next(i for i in spec.images if "pause" in i.ref)
    url = "https://dl.k8s.io/v1.10.3/kubernetes-{}-linux-amd64.tar.gz"
    lock = Lock(spec_sha256="0" * 64, name="k8s", version="1.10.3", options={},
                binaries=tuple(LockedBinary(name=f"kubernetes-{n}", version="1.10.3", url=url.format(n),
                                            sha256=c * 64, size=1, pin_source="spec")
                               for n, c in (("server", "a"), ("client", "b"))),
                rpms=(LockedRpm(name="bash", version="4.2.46", release="31.el7", arch="x86_64", repo=repo.name,
                                url=repo.baseurl + "bash.rpm", sha256="c" * 64, size=1),),
                images=(LockedImage(ref=pause.ref, digest="sha256:" + "d" * 64, media_type="x", size=1,
                                    platforms=("linux/amd64",), blobs=()),))
    got = {i.name: i.supplier for i in assemble.sbom_items(spec, lock, [])}
    assert got == {"kubernetes-server": "Organization: The Kubernetes Authors",
                   "kubernetes-client": "Organization: ACME Mirror Ltd",
                   "bash": "Organization: CentOS", str(pause.parsed): "Organization: The Kubernetes Authors"}
