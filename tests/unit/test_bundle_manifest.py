"""The manifest's canonical bytes and its strict validation."""

from __future__ import annotations

import copy
import json

import pytest

from contract.bundle.contents import Check, Component, ComponentKind, SourceKind, TrustEntry
from contract.bundle.manifest import FileEntry, Manifest
from contract.errors import Error

H = "0123456789abcdef" * 4
FPR = "6341AB2753D78A78A7C27BB124C6A8A7F4A80EB5"
KUBELET = Component(ComponentKind.BINARY, "kubernetes-server", "1.10.3", ("binaries/kubelet",))
RPM = Component(ComponentKind.RPM, "a", "1.0-1.el7", ("rpms/a.rpm",))
TRUST = (TrustEntry(SourceKind.BINARY, "kubernetes-server", Check.UPSTREAM_DIGEST, (), "sha256 from upstream"),
         TrustEntry(SourceKind.RPM, "a", Check.GPG_SIGNED, (FPR,), "signed"),
         TrustEntry(SourceKind.RPM_REPO, "base", Check.GPG_SIGNED, (FPR,), "the repo's key"),
         TrustEntry(SourceKind.RPM_REPODATA, "base", Check.UNSIGNED, (), "no repomd.xml.asc"))


def sample() -> Manifest:
    return Manifest(
        format_version=2,
        name="k8s",
        version="1.10.3",
        created="2018-05-21T10:00:00Z",
        spec_sha256=H,
        lock_sha256=H,
        components=(KUBELET, RPM),
        trust=TRUST,
        options={"dns": "kube-dns"},
        files=(
            FileEntry("binaries/kubelet", 10, H, 0o755),
            FileEntry("bundle-lock.yaml", 0, H, 0o644),
            FileEntry("rpms/a.rpm", 3, H, 0o644),
        ),
    )


def test_round_trip_is_exact() -> None:
    m = sample().check()
    data = m.to_bytes()
    again = Manifest.from_bytes(data)
    assert again == m
    assert again.to_bytes() == data
    assert data.endswith(b"\n")
    assert list(json.loads(data)) == sorted(json.loads(data))
    assert again.components == (KUBELET, RPM) and again.trust == TRUST and again.options == {"dns": "kube-dns"}
    assert again.versions() == {"binary/kubernetes-server": "1.10.3", "rpm/a": "1.0-1.el7"}
    assert json.loads(data)["trust"][1] == {"kind": "rpm", "name": "a", "check": "gpg-signed", "keys": [FPR],
                                            "detail": "signed"}
    assert json.loads(data)["components"][0] == {"kind": "binary", "name": "kubernetes-server",
                                                 "version": "1.10.3", "paths": ["binaries/kubelet"]}


def test_bytes_do_not_depend_on_component_order() -> None:
    m = sample()
    reordered = Manifest(**{**m.__dict__, "components": (RPM, KUBELET), "trust": TRUST[::-1]})
    assert reordered.to_bytes() == m.to_bytes()


def test_untyped_components_are_a_programming_error() -> None:
    with pytest.raises(TypeError, match="Component"):
        Manifest(**{**sample().__dict__, "components": {"kubernetes": "1.10.3"}})


def test_helpers() -> None:
    m = sample()
    assert m.total_size == 13
    assert m.by_path()["rpms/a.rpm"].size == 3


def _doc() -> dict:
    return json.loads(sample().to_bytes())


def _bad(mutate) -> str:
    doc = copy.deepcopy(_doc())
    mutate(doc)
    with pytest.raises(Error) as e:
        Manifest.from_bytes(json.dumps(doc).encode())
    return e.value.render()


def _set_file(i, key, value):
    def mutate(doc):
        doc["files"][i][key] = value
    return mutate


@pytest.mark.parametrize(
    "mutate, field",
    [
        (_set_file(0, "path", "/etc/passwd"), "files[0].path"),
        (_set_file(0, "path", "../evil"), "files[0].path"),
        (_set_file(0, "path", "binaries/../../evil"), "files[0].path"),
        (_set_file(0, "path", "binaries//kubelet"), "files[0].path"),
        (_set_file(0, "path", "binaries/./kubelet"), "files[0].path"),
        (_set_file(0, "path", "binaries/"), "files[0].path"),
        (_set_file(0, "path", ""), "files[0].path"),
        (_set_file(0, "path", "manifest.json"), "files[0].path"),
        (_set_file(1, "path", "binaries/kubelet"), "files[1].path"),  # duplicate
        (_set_file(2, "path", "a.rpm"), "files[2].path"),  # out of order
        (_set_file(1, "path", "binaries/kubelet/x"), "files[1].path"),  # under a file
        (_set_file(0, "sha256", H.upper()), "files[0].sha256"),
        (_set_file(0, "sha256", H[:-1]), "files[0].sha256"),
        (_set_file(0, "size", -1), "files[0].size"),
        (_set_file(0, "size", "10"), "files[0].size"),
        (_set_file(0, "size", True), "files[0].size"),
        (_set_file(0, "mode", "4755"), "files[0].mode"),
        (_set_file(0, "mode", 493), "files[0].mode"),
        (_set_file(0, "extra", 1), "files[0].extra"),
        (lambda d: d["files"][0].pop("sha256"), "files[0].sha256"),
        (lambda d: d.update(format_version=3), "format_version"),
        (lambda d: d.update(format_version="2"), "format_version"),
        (lambda d: d.update(format_version=True), "format_version"),
        (lambda d: d.update(created="2018-05-21 10:00:00"), "created"),
        (lambda d: d.update(created="2018-05-21T10:00:00+02:00"), "created"),
        (lambda d: d.update(spec_sha256="x"), "spec_sha256"),
        (lambda d: d.update(components={"etcd": "3.2.18"}), "components"),  # a format 1 map in format 2
        (lambda d: d.pop("trust"), "trust"),
        (lambda d: d.pop("options"), "options"),
        (lambda d: d.update(files={}), "files"),
        (lambda d: d.pop("name"), "name"),
        (lambda d: d.update(surprise=1), "surprise"),
    ],
)
def test_validation_names_the_bad_field(mutate, field: str) -> None:
    assert field in _bad(mutate)


def test_every_problem_is_reported() -> None:
    def mutate(doc):
        doc["files"][0]["sha256"] = "x"
        doc["files"][2]["size"] = -5
    text = _bad(mutate)
    assert "files[0].sha256" in text and "files[2].size" in text


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b"\xff\xfe", b'{"a": 1}'])
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(Error, match="manifest.json"):
        Manifest.from_bytes(data)


def test_check_refuses_setuid_mode() -> None:
    m = sample()
    bad = Manifest(**{**m.__dict__, "files": (FileEntry("binaries/kubelet", 1, H, 0o4755),) + m.files[1:]})
    with pytest.raises(Error, match=r"files\[0\].mode"):
        bad.check()


def _p256_signer(curve=None) -> str:
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(curve or ec.SECP256R1()).public_key()
    return base64.b64encode(key.public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


def test_signer_p256_is_optional_canonical_and_round_trips() -> None:
    signer = _p256_signer()
    m = Manifest(**{**sample().__dict__, "signer": "SHA256:x", "signer_p256": signer})
    data = m.check().to_bytes()
    assert Manifest.from_bytes(data) == m and Manifest.from_bytes(data).to_bytes() == data
    assert json.loads(data)["signer_p256"] == signer
    assert list(json.loads(data)) == sorted(json.loads(data))
    assert b'\n "signer_p256": "' in data  # one line at the top level, as bootstrap.sh's reader expects
    assert m.p256_signer() is not None and sample().p256_signer() is None
    assert b"signer_p256" not in sample().to_bytes()  # bundles without a P-256 key: the bytes are as before


@pytest.mark.parametrize("value, why", [
    (3, "non-empty string"),
    ("", "non-empty string"),
    ("not base64!", "base64"),
    ("anVuaw==", "DER"),
])
def test_bad_signer_p256_is_refused(value, why: str) -> None:
    text = _bad(lambda d: d.update(signer_p256=value))
    assert "signer_p256" in text and why in text


def test_signer_p256_on_another_curve_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    text = _bad(lambda d: d.update(signer_p256=_p256_signer(ec.SECP384R1())))
    assert "signer_p256" in text and "not P-256" in text
