"""Bundles of manifest format 1 (before the typed trust section) still verify, unpack and read: a real one,
written by commit 6084910's bundler (tests/golden/bundle-v1/generate.py says how), mapped to the typed model."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from contract import bundle as fmt
from contract.bundle import layout
from contract.bundle.contents import FINDING_TEXT, Check, ComponentKind, SourceKind
from contract.bundle.manifest import Manifest
from contract.errors import ValidationError
from installer import versions
from installer.report import trust_summary

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "bundle-v1"
BUNDLE = GOLDEN / "k8s-1.10.3.bundle.tar.zst"
BIN = Path(sys.executable).parent
CENTOS = "6341AB2753D78A78A7C27BB124C6A8A7F4A80EB5"
DOCKER = "060A61C51B558A7F742B77AAC52FEB6B621E9F35"


def test_the_golden_bundle_is_the_one_committed() -> None:
    # regenerating it with newer sources would write format 2 and test nothing: generate.py refuses, this checks
    assert hashlib.sha256(BUNDLE.read_bytes()).hexdigest() == \
        "ce56c274ba7eb9f71c6cc68ee953e9473dbf3aa72e91a26c0169085f345cf08d"


@pytest.mark.parametrize("pub, checked", [("bundle.pub", ("manifest.sig", "manifest.sig.p256")),
                                          ("bundle-p256.pub", ("manifest.sig.p256",))])
def test_it_verifies_and_unpacks_with_either_key(pub: str, checked, tmp_path) -> None:
    key = fmt.load_public_key(GOLDEN / pub)
    report = fmt.verify_bundle(BUNDLE, key)
    assert (report.name, report.version, report.files, report.checked) == ("k8s", "1.10.3", 12, checked)
    assert report.warnings == (f"{FINDING_TEXT[Check.UNCHECKED]}: rpm/tool, rpm-repo/local, rpm-repodata/local",
                               f"{FINDING_TEXT[Check.UNRECORDED]}: rpm/oldpkg")
    fmt.unpack_bundle(BUNDLE, key, tmp_path / "site")
    assert (tmp_path / "site" / "binaries" / "etcd-v3.3.1-linux-amd64.tar").read_bytes() == b"etcd stand-in\n"


def signed_manifest() -> tuple[Manifest, bytes]:
    manifest, data, _ = fmt.read_manifest(BUNDLE, fmt.load_public_key(GOLDEN / "bundle.pub"))
    return manifest, data


def test_format_1_reads_into_the_typed_model() -> None:
    m, data = signed_manifest()
    assert m.format_version == 1 and json.loads(data)["format_version"] == 1
    assert m.to_bytes() == data  # read as it is: the exact signed bytes again
    assert m.versions() == {
        "binary/docker-compose": "1.18.0", "binary/etcd": "3.3.1", "binary/flannel": "0.10.0",
        "binary/kubernetes-server": "1.10.3",
        "image/k8s.gcr.io/pause-amd64:3.1": "sha256:6210c0bf05396716df932f0729df69de0533933e5ad9871fd07b61811c4c28df",
        "rpm/docker-ce": "18.09.1-3.el7", "rpm/haproxy": "1.5.18-8.el7", "rpm/oldpkg": "2.0-1.el7",
        "rpm/tool": "1.0-1.el7"}
    assert all(c.paths == () for c in m.components)  # format 1 recorded no paths
    assert m.components[0].kind is ComponentKind.BINARY
    assert m.options == {"dns": "kube-dns", "docker": "rpm"} and m.unmapped() == {}
    checks = {t.key: (t.check, t.keys) for t in m.trust}
    assert checks == {
        "binary/docker-compose": (Check.SPEC_PIN, ()), "binary/etcd": (Check.UPSTREAM_DIGEST, ()),
        "binary/flannel": (Check.FIRST_SEEN, ()), "binary/kubernetes-server": (Check.UPSTREAM_DIGEST, ()),
        "image/k8s.gcr.io/pause-amd64:3.1": (Check.REGISTRY_DIGEST, ()),
        "rpm/docker-ce": (Check.GPG_SIGNED, (DOCKER,)), "rpm/haproxy": (Check.GPG_SIGNED, (CENTOS,)),
        "rpm/oldpkg": (Check.UNRECORDED, ()), "rpm/tool": (Check.UNCHECKED, ()),
        "rpm-repo/base": (Check.GPG_SIGNED, (CENTOS,)), "rpm-repo/docker-ce-stable": (Check.GPG_SIGNED, (DOCKER,)),
        "rpm-repo/local": (Check.UNCHECKED, ()), "rpm-repodata/base": (Check.UNSIGNED, ()),
        "rpm-repodata/docker-ce-stable": (Check.GPG_SIGNED, (DOCKER,)), "rpm-repodata/local": (Check.UNCHECKED, ())}
    assert next(t for t in m.trust if t.key == "rpm/tool").detail == "signature unchecked (gpgcheck: false)"


def test_the_installer_reads_it_as_before() -> None:
    m, _ = signed_manifest()
    assert versions.component_versions(m.components) == {
        "kubernetes": "1.10.3", "etcd": "3.3.1", "flannel": "0.10.0", "docker": "18.09.1-3.el7",
        "haproxy": "1.5.18-8.el7"}
    assert versions.decide({"kubernetes": "1.10.2"}, m.components, Path("applied.json")).target == "1.10.3"
    t = trust_summary(m.trust)
    # what the evidence report derived from the format 1 texts, now from the typed entries
    assert t["repos"] == {"base": f"key {CENTOS}; repomd unsigned", "docker-ce-stable": f"key {DOCKER}; repomd signed",
                          "local": "gpgcheck off"}
    assert (t["gpgcheck_off"], t["unchecked_rpms"], t["first_seen_binaries"], t["signed_rpms"]) == \
        (["local"], ["rpm/tool"], ["binary/flannel"], 2)
    assert len(t["warnings"]) == 2 and len(t["notes"]) == 1


def test_inspect_text_and_json(tmp_path) -> None:
    r = subprocess.run([str(BIN / "bundler"), "inspect", str(BUNDLE), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["format_version"] == 1 and d["legacy_components"] == {}
    assert {"kind": "rpm", "name": "tool", "check": "unchecked", "keys": [],
            "detail": "signature unchecked (gpgcheck: false)"} in d["trust"]
    assert {"kind": "binary", "name": "etcd", "version": "3.3.1", "paths": []} in d["components"]
    assert d["warnings"][0].endswith(": rpm/tool, rpm-repo/local, rpm-repodata/local")
    assert d["notes"] == [f"{FINDING_TEXT[Check.FIRST_SEEN]}: binary/flannel"]
    text = subprocess.run([str(BIN / "bundler"), "inspect", str(BUNDLE)], capture_output=True, text=True).stdout
    lines = text.splitlines()
    assert "  components (manifest format 1):" in lines and "  options: dns=kube-dns, docker=rpm" in lines
    assert f"  WARNING: {FINDING_TEXT[Check.UNRECORDED]}: rpm/oldpkg" in lines
    assert f"  note: {FINDING_TEXT[Check.FIRST_SEEN]}: binary/flannel" in lines
    assert any(ln.split()[:3] == ["rpm/haproxy", "gpg-signed", CENTOS] for ln in lines)


def test_installer_verify_prints_the_trust_warnings() -> None:
    r = subprocess.run([str(BIN / "installer"), "verify", str(BUNDLE), "--pub", str(GOLDEN / "bundle.pub")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"WARNING: {FINDING_TEXT[Check.UNCHECKED]}: rpm/tool" in r.stdout
    d = json.loads(subprocess.run([str(BIN / "installer"), "verify", str(BUNDLE), "--pub", str(GOLDEN / "bundle.pub"),
                                   "--json"], capture_output=True, text=True).stdout)
    assert d["ok"] and len(d["warnings"]) == 2


def v1(components: dict) -> dict:
    return {"format_version": 1, "name": "k8s", "version": "1.10.3", "created": "2018-05-21T10:00:00Z",
            "spec_sha256": "0" * 64, "lock_sha256": "1" * 64, "components": components, "files": []}


def test_older_format_1_maps_what_it_has_and_keeps_the_rest() -> None:
    """Bundles from before trust was recorded, and entries no bundler wrote: nothing dropped without a trace."""
    m = Manifest.from_dict(v1({"binary/etcd": "3.3.1", "kubernetes": "1.10.3", "options": "dns=kube-dns",
                               "trust/rpm/x": "looked at it", "repo/odd": "trust me", "trust/tarball/y": "z"}))
    assert m.versions() == {"binary/etcd": "3.3.1"} and m.options == {"dns": "kube-dns"}
    assert [(t.key, t.check, t.detail) for t in m.trust] == [("rpm/x", Check.UNRECORDED, "looked at it"),
                                                            ("rpm-repo/odd", Check.UNRECORDED, "trust me")]
    assert m.unmapped() == {"kubernetes": "1.10.3", "trust/tarball/y": "z"}
    assert Manifest.from_dict(v1({"binary/etcd": "3.3.1"})).trust == ()
    assert next(t for t in m.trust if t.key == "rpm-repo/odd").kind is SourceKind.RPM_REPO


def test_format_1_is_still_validated_strictly() -> None:
    with pytest.raises(ValidationError) as e:
        Manifest.from_dict(v1({"binary/etcd": 3}))
    assert e.value.details == ["components.binary/etcd: must map a name to a non-empty version string"]
    with pytest.raises(ValidationError) as e:
        Manifest.from_dict({**v1({"binary/etcd": "3.3.1"}), "trust": []})
    assert e.value.details == ["trust: unknown field"]  # format 1 has no trust section


def test_the_writer_writes_format_2() -> None:
    assert layout.FORMAT_VERSION == 2


def test_any_value_in_a_format_1_manifest_is_a_validation_error_never_a_crash() -> None:
    from tests.unit.test_bundle_contents import _leaves

    _, data = signed_manifest()
    base = json.loads(data)
    for path in _leaves(base):
        for value in (None, True, 0, "", "x", "k=v,=", "key Z; repomd signed", [], {}):
            d = json.loads(data)
            node = d
            for key in path[:-1]:
                node = node[key]
            if path:
                node[path[-1]] = value
            try:
                Manifest.from_dict(d)
            except ValidationError as e:
                assert e.details, (path, value)


def test_apply_prepares_it_as_any_bundle(tmp_path) -> None:
    from installer.site import prepare_bundle
    from installer.state import StateDir

    said = []
    b = prepare_bundle(BUNDLE, GOLDEN / "bundle.pub", StateDir(tmp_path / "state").ensure(), said.append)
    assert versions.component_versions(b.components)["kubernetes"] == "1.10.3"
    assert trust_summary(b.trust)["unchecked_rpms"] == ["rpm/tool"]
    assert (b.dir / "rpms" / "unchecked" / "Packages" / "tool-1.0-1.el7.x86_64.rpm").is_file()
    warned = [s for s in said if "WARNING" in s]
    assert len(warned) == 2 and warned == [f"bundle: WARNING: {w}" for w in fmt.verify_bundle(
        BUNDLE, fmt.load_public_key(GOLDEN / "bundle.pub")).warnings]
