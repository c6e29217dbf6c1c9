"""SBOM: SPDX 2.3 shape, one package per component with sha256 and purl, deterministic."""

from bundler import sbom

ITEMS = [
    sbom.Item("binary", "etcd", "3.3.1", "a" * 64, "https://github.com/coreos/etcd/x.tgz",
              sbom.binary_purl("etcd", "3.3.1", "https://github.com/coreos/etcd/x.tgz")),
    sbom.Item("rpm", "docker-ce", "3:18.09.1-3.el7", "b" * 64, "https://download.docker.com/x.rpm",
              sbom.rpm_purl("docker-ce", "3", "18.09.1", "3.el7", "x86_64", "docker")),
    sbom.Item("image", "k8s.gcr.io/pause-amd64:3.1", "3.1", "c" * 64, "k8s.gcr.io/pause-amd64:3.1",
              sbom.image_purl("k8s.gcr.io", "pause-amd64", "3.1", "sha256:" + "c" * 64)),
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
