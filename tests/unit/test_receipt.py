"""The site receipt (contract/receipt.py), what `installer receipt` claims of the unpacked bundle, and how
`bundler build --since` reads a receipt or an old lock (bundler/since.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bundler import since
from bundler.cache import Cache
from contract.bundle import Entry, generate_keypair, layout, load_private_key, load_public_key, write_bundle
from contract.bundle.archive import unpack_bundle
from contract.errors import Error, ValidationError
from contract.receipt import Receipt, ReceiptBundle, ReceiptFile, ReceiptHost, best_base
from installer import receipt as receipt_mod
from installer.state import StateDir

H = "a" * 64


def _receipt(**kw) -> Receipt:
    b = ReceiptBundle("k8s", "1.10.3", H, "b" * 64, (ReceiptFile("binaries/x", 3, "c" * 64),))
    return Receipt(**{"created": "2018-06-01T00:00:00Z", "bundles": (b,),
                      "hosts": {"m1": ReceiptHost(("docker-ce-18.09.1-3.el7.x86_64",),
                                                  {"/usr/local/bin/kubelet": "d" * 64})}, **kw})


def test_round_trip() -> None:
    r = _receipt()
    assert Receipt.from_dict(json.loads(r.to_bytes()), "r.json") == r


@pytest.mark.parametrize("change, where", [
    (lambda d: d.update(format=2), "format: unsupported 2"),
    (lambda d: d.pop("hosts"), "hosts: missing"),
    (lambda d: d["bundles"][0].update(manifest_sha256="nope"), "bundles\\[0\\].manifest_sha256: must be 64"),
    (lambda d: d["bundles"][0]["files"][0].update(size=-1), "bundles\\[0\\].files\\[0\\].size: must be an integer"),
    (lambda d: d["bundles"][0]["files"][0].update(extra=1), "bundles\\[0\\].files\\[0\\].extra: unknown field"),
    (lambda d: d["registry"].update(blobs=["sha256:xyz"]), "registry.blobs\\[0\\]: must be sha256"),
    (lambda d: d["hosts"].update(m2={"rpms": []}), "hosts.m2.binaries: missing"),
])
def test_every_bad_field_is_located(change, where: str) -> None:
    d = json.loads(_receipt().to_bytes())
    change(d)
    with pytest.raises(ValidationError, match=where):
        Receipt.from_dict(d, "r.json")


def test_the_base_is_the_bundle_holding_most_of_what_is_wanted() -> None:
    small = ReceiptBundle("k8s", "1.10.2", H, H, (ReceiptFile("a", 1, "1" * 64),))
    big = ReceiptBundle("k8s", "1.10.3", "e" * 64, H, (ReceiptFile("b", 100, "2" * 64),))
    r = Receipt(created="2018-06-01T00:00:00Z", bundles=(small, big))
    assert best_base(r, {"1" * 64: 1, "2" * 64: 100}) == big
    assert best_base(Receipt(created="2018-06-01T00:00:00Z", bundles=()), {}) is None


@pytest.fixture()
def unpacked_state(tmp_path):
    key, pub = generate_keypair(tmp_path / "keys")
    src = tmp_path / "src"
    src.mkdir()
    entries = []
    for path, data in ((layout.binary_path("kubelet"), b"k" * 1000), (layout.LOCK, b"lock\n")):
        p = src / hashlib.sha256(path.encode()).hexdigest()
        p.write_bytes(data)
        entries.append(Entry(path, p, len(data), hashlib.sha256(data).hexdigest()))
    res = write_bundle(tmp_path / "out", "k8s", "1.10.3", entries, load_private_key(key), spec_sha256=H,
                       lock_sha256="b" * 64, components={}, created="2018-06-01T00:00:00Z")
    state = StateDir(tmp_path / "state").ensure()
    unpack_bundle(res.path, load_public_key(pub), state.root / "bundle-1")
    state.set_bundle_info({"dir": str(state.root / "bundle-1"), "manifest_sha256": "x"})
    return state, res, entries


def test_the_receipt_claims_only_files_that_are_there_with_their_size(unpacked_state) -> None:
    state, res, entries = unpacked_state
    (bundle,), notes = receipt_mod.bundle_part(state)
    assert notes == []
    assert {f.path for f in bundle.files} == {e.path_in_bundle for e in entries}
    assert bundle.manifest_sha256 == hashlib.sha256(res.manifest.to_bytes()).hexdigest()
    (state.root / "bundle-1" / layout.binary_path("kubelet")).write_bytes(b"short")  # damaged since unpack
    (bundle,), notes = receipt_mod.bundle_part(state)
    assert [f.path for f in bundle.files] == [layout.LOCK]
    assert "1 file(s) of the unpacked bundle are missing or have another size" in notes[0]


def test_no_unpacked_bundle_or_none_with_its_manifest_is_said(tmp_path, unpacked_state) -> None:
    bundles, notes = receipt_mod.bundle_part(StateDir(tmp_path / "empty"))
    assert bundles == () and "no unpacked bundle" in notes[0]
    state = unpacked_state[0]
    (state.root / "bundle-1" / layout.MANIFEST).unlink()
    bundles, notes = receipt_mod.bundle_part(state)
    assert bundles == () and "did not keep the signed manifest" in notes[0]


def test_since_reads_a_receipt(tmp_path) -> None:
    p = tmp_path / "receipt.json"
    p.write_bytes(_receipt().to_bytes())
    entries = [Entry("binaries/x", tmp_path, 3, "c" * 64), Entry("binaries/y", tmp_path, 3, "f" * 64)]
    b = since.load(p, Cache(tmp_path / "cache"), entries)
    assert (b.source, b.base.version, b.base.manifest_sha256) == ("receipt", "1.10.3", H)
    assert b.delta(entries).from_base == ("binaries/x",)


def test_since_refuses_what_is_neither_a_receipt_nor_a_lock(tmp_path) -> None:
    cache = Cache(tmp_path / "cache")
    with pytest.raises(Error, match="does not exist"):
        since.load(tmp_path / "nope.json", cache, [])
    (tmp_path / "x.yaml").write_text("hello: world\n")
    with pytest.raises(Error, match="neither a site receipt nor a bundle-lock.yaml"):
        since.load(tmp_path / "x.yaml", cache, [])
    (tmp_path / "r.json").write_bytes(Receipt(created="2018-06-01T00:00:00Z", bundles=()).to_bytes())
    with pytest.raises(Error, match="lists no unpacked bundle"):
        since.load(tmp_path / "r.json", cache, [])
    d = json.loads(_receipt().to_bytes())
    d["bundles"][0]["lock_sha256"] = "short"
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValidationError, match="bad.json: bundles\\[0\\].lock_sha256"):
        since.load(tmp_path / "bad.json", cache, [])


def test_receipt_text_names_what_it_wrote(tmp_path) -> None:
    text = receipt_mod.text(_receipt(), Path("/tmp/r.json"), ["a note"])
    assert "bundle k8s 1.10.3" in text and "m1: 1 RPMs, 1 executables" in text and "note: a note" in text


def test_the_hosts_part_is_one_facts_read_per_host_writing_nothing(tmp_path) -> None:
    """Every inventory host is read with the real facts script (here run locally for each host name): its RPMs
    and the sha256 of each asked executable that exists; a host that cannot be read fails the whole receipt."""
    from installer import inventory
    from installer.hosts.local import LocalConnector

    inv = inventory.load(Path(__file__).resolve().parents[2] / "inventory.example.yaml")
    exe = tmp_path / "kubelet"
    exe.write_bytes(b"kubelet 1.10.3")
    hosts = receipt_mod.hosts_part(inv, lambda inv, host: LocalConnector(host.name),
                                   [str(exe), str(tmp_path / "absent")], 2)
    assert set(hosts) == {h.name for h in inv.hosts}
    for h in hosts.values():
        assert h.binaries == {str(exe): hashlib.sha256(b"kubelet 1.10.3").hexdigest()}
    assert not (tmp_path / ".k8s-facts").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["kubelet"]

    class Down(LocalConnector):
        def run(self, cmd, **kw):
            raise Error(f"{self.name}: ssh: connect to host: Connection refused")

    first = inv.hosts[0].name
    with pytest.raises(Error, match=f"cannot read 1 host\\(s\\): {first}") as e:
        receipt_mod.hosts_part(inv, lambda inv, host: Down(host.name) if host.name == first
                               else LocalConnector(host.name), [str(exe)], 2)
    assert "nothing was written" in e.value.hint
