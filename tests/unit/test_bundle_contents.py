"""The manifest's typed components, trust and options (format 2): strict validation, every bad field located,
and the findings (warnings, notes) every reader prints, decided by the check and never by the words."""

from __future__ import annotations

import copy
import json

import pytest

from contract.bundle import contents as bc
from contract.bundle.contents import Check, Component, ComponentKind, Level, SourceKind, TrustEntry
from contract.bundle.manifest import FileEntry, Manifest
from contract.errors import ValidationError

H = "0123456789abcdef" * 4
FPR = "6341AB2753D78A78A7C27BB124C6A8A7F4A80EB5"
FILES = ("binaries/etcd-v3.3.1-linux-amd64.tar", "images/blobs/sha256/" + "a" * 64, "images/blobs/sha256/" + "b" * 64,
         "rpms/Packages/haproxy-1.5.18-8.el7.x86_64.rpm")


def manifest() -> Manifest:
    return Manifest(
        format_version=2, name="k8s", version="1.10.3", created="2018-05-21T10:00:00Z", spec_sha256=H,
        lock_sha256=H, files=tuple(FileEntry(p, 1, H) for p in FILES), options={"dns": "kube-dns"},
        components=(Component(ComponentKind.BINARY, "etcd", "3.3.1", (FILES[0],)),
                    Component(ComponentKind.IMAGE, "k8s.gcr.io/pause-amd64:3.1", "sha256:" + "a" * 64, FILES[1:3]),
                    Component(ComponentKind.RPM, "haproxy", "1.5.18-8.el7", (FILES[3],))),
        trust=(TrustEntry(SourceKind.BINARY, "etcd", Check.FIRST_SEEN, (), "no digest"),
               TrustEntry(SourceKind.IMAGE, "k8s.gcr.io/pause-amd64:3.1", Check.REGISTRY_DIGEST, (), "served"),
               TrustEntry(SourceKind.RPM, "haproxy", Check.GPG_SIGNED, (FPR,), "signed"),
               TrustEntry(SourceKind.RPM_REPO, "base", Check.UNCHECKED, (), "gpgcheck: false")))


def doc() -> dict:
    return json.loads(manifest().check().to_bytes())


def problems(mutate) -> list[str]:
    d = copy.deepcopy(doc())
    mutate(d)
    with pytest.raises(ValidationError) as e:
        Manifest.from_dict(d)
    return e.value.details


def at(where: str, key, value):
    def mutate(d):
        section, i = where.split(":")
        d[section][int(i)][key] = value
    return mutate


@pytest.mark.parametrize("mutate, located", [
    (at("components:0", "kind", "tarball"), "components[0].kind: 'tarball' is not one of binary, rpm"),
    (at("components:0", "name", ""), "components[0].name: must be a non-empty string"),
    (at("components:0", "version", 3), "components[0].version: must be a non-empty string"),
    (at("components:0", "paths", []), "components[0].paths: must be a non-empty list"),
    (at("components:0", "paths", "binaries/etcd"), "components[0].paths: must be a non-empty list"),
    (at("components:0", "paths", ["binaries/nope"]), "components[0].paths[0]: 'binaries/nope' is not a file"),
    (at("components:1", "paths", [FILES[2], FILES[1]]), "components[1].paths[1]:"),
    (at("components:0", "extra", 1), "components[0].extra: unknown field"),
    (lambda d: d["components"][0].pop("version"), "components[0].version: missing"),
    (lambda d: d["components"].reverse(), "components[1]: image/"),  # out of order
    (lambda d: d["components"].insert(1, d["components"][0]), "components[1]: binary/etcd 3.3.1 is a duplicate"),
    (lambda d: d.update(components={"binary/etcd": "3.3.1"}), "components: must be a list"),
    (lambda d: d["components"].append("binary/etcd"), "components[3]: must be an object"),
    (at("trust:0", "kind", "tarball"), "trust[0].kind: 'tarball' is not one of binary"),
    (at("trust:0", "check", "trust me"), "trust[0].check: 'trust me' is not one of gpg-signed"),
    (at("trust:2", "check", ["gpg-signed"]), "trust[2].check: ['gpg-signed'] is not one of gpg-signed"),
    (at("components:0", "kind", {"binary": 1}), "components[0].kind: {'binary': 1} is not one of"),
    (at("trust:0", "name", ""), "trust[0].name: must be a non-empty string"),
    (at("trust:0", "detail", None), "trust[0].detail: must be a string"),
    (at("trust:0", "keys", FPR), "trust[0].keys: must be a list"),
    (at("trust:0", "keys", [FPR]), "trust[0].keys: must be empty: only a gpg-signed source names keys"),
    (at("trust:2", "keys", []), "trust[2].keys: a gpg-signed source names the key(s)"),
    (at("trust:2", "keys", [FPR.lower()]), "trust[2].keys[0]:"),
    (at("trust:0", "surprise", 1), "trust[0].surprise: unknown field"),
    (lambda d: d["trust"][0].pop("check"), "trust[0].check: missing"),
    (at("trust:0", "name", "kubelet"), "trust[0].name: no component binary/kubelet"),
    (lambda d: d["trust"].reverse(), "trust[1]: rpm/haproxy is out of order"),
    (lambda d: d["trust"].insert(1, d["trust"][0]), "trust[1]: binary/etcd is a duplicate"),
    (lambda d: d["trust"].pop(1), "trust: no entry says how image/k8s.gcr.io/pause-amd64:3.1 was checked"),
    (lambda d: d.update(trust={}), "trust: must be a list"),
    (lambda d: d.update(options=["dns=kube-dns"]), "options: must be an object"),
    (lambda d: d["options"].update(dns=1), "options.dns: must map a name to a string"),
    (lambda d: d.pop("trust"), "trust: missing"),
])
def test_every_bad_field_is_located(mutate, located: str) -> None:
    found = problems(mutate)
    assert any(p.startswith(located) for p in found), found


def test_all_problems_at_once() -> None:
    def mutate(d):
        d["components"][0]["kind"] = "x"
        d["trust"][2]["check"] = "y"
        d["options"]["dns"] = 2
    found = problems(mutate)
    assert [p.split(":")[0] for p in found] == ["components[0].kind", "trust[2].check", "options.dns"]


def test_round_trip_and_typed_fields() -> None:
    m = manifest().check()
    again = Manifest.from_bytes(m.to_bytes())
    assert again == m and again.to_bytes() == m.to_bytes()
    assert again.trust[2].check is Check.GPG_SIGNED and again.trust[2].keys == (FPR,)
    assert again.components[1].paths == FILES[1:3] and again.components[1].key == "image/k8s.gcr.io/pause-amd64:3.1"
    assert again.unmapped() == {} and again.legacy_components == {}


def test_findings_come_from_the_check() -> None:
    trust = manifest().trust
    assert [(f.level, f.check, f.sources) for f in bc.findings(trust)] == [
        (Level.WARNING, Check.UNCHECKED, ("rpm-repo/base",)), (Level.NOTE, Check.FIRST_SEEN, ("binary/etcd",))]
    assert bc.warnings(trust) == (f"{bc.FINDING_TEXT[Check.UNCHECKED]}: rpm-repo/base",)
    assert bc.notes(trust) == (f"{bc.FINDING_TEXT[Check.FIRST_SEEN]}: binary/etcd",)
    # the detail is for people: whatever it says, the findings are the same
    for detail in ("", "gpgcheck: true, all verified", "signature unchecked (gpgcheck: false)"):
        reworded = tuple(TrustEntry(t.kind, t.name, t.check, t.keys, detail) for t in trust)
        assert bc.findings(reworded) == bc.findings(trust)
    assert set(bc.LEVEL) == set(bc.FINDING_TEXT)  # every check called out has its words


def test_contents_refuse_untyped_items() -> None:
    with pytest.raises(TypeError, match="TrustEntry"):
        bc.Contents((), ({"kind": "rpm"},))


def _leaves(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, path + (i,))


def test_any_value_anywhere_is_a_validation_error_never_a_crash() -> None:
    """Every node of a valid manifest replaced by each JSON type: refused with located problems, or valid."""
    base = doc()
    for path in _leaves(base):
        if not path:
            continue
        for value in (None, True, 0, -1, "", "x", [], ["x"], {}, {"x": 1}):
            d = copy.deepcopy(base)
            node = d
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            try:
                Manifest.from_dict(d)
            except ValidationError as e:
                assert e.details and all(isinstance(p, str) and p for p in e.details), (path, value)
