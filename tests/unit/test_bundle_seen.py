"""A converged re-apply does not re-read an unchanged bundle in full: the identity of the file at its last full
verification is kept in bundle.json; a changed byte (ctime moved, even with mtime put back) is verified again and
refused, a file changed just before it was verified is not recorded."""

from __future__ import annotations

import json
import os
import time

import pytest

import contract.bundle as fmt
from contract.errors import Error
from installer import bundle_seen
from installer import site as site_mod
from installer.state import StateDir
from tests.unit.test_plan_readonly import signed_bundle


@pytest.fixture
def bundle(tmp_path):
    res = signed_bundle(tmp_path, {"binaries/a.tar": os.urandom(200_000), "bundle-spec.yaml": b"name: k8s\n"})
    return res.path, tmp_path / "keys" / "bundle.pub"


@pytest.fixture
def full_passes(monkeypatch):
    calls = []
    real = fmt.verify_bundle

    def counted(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(fmt, "verify_bundle", counted)
    return calls


def prepare(bundle, state, lines=None):
    b, pub = bundle
    return site_mod.prepare_bundle(b, pub, state, (lines if lines is not None else []).append)


def test_an_unchanged_bundle_is_not_verified_in_full_again(bundle, tmp_path, monkeypatch, full_passes):
    monkeypatch.setattr(bundle_seen, "RACY_SECONDS", 0)
    state = StateDir(tmp_path / "state").ensure()
    first = prepare(bundle, state)  # unpacked: verified while unpacking, the identity recorded
    assert not first.reused and bundle_seen.KEY in state.bundle_info()
    lines = []
    again = prepare(bundle, state, lines)
    assert again.reused and full_passes == [] and "unchanged since verified in full" in lines[0]
    assert (again.fingerprint, again.name, again.version) == (first.fingerprint, first.name, first.version)
    before = state.bundle_info_path.read_bytes()
    prepare(bundle, state)
    assert state.bundle_info_path.read_bytes() == before  # a converged run writes nothing


def test_a_changed_byte_is_not_taken_for_the_verified_file_and_is_refused(bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_seen, "RACY_SECONDS", 0)
    state = StateDir(tmp_path / "state").ensure()
    first = prepare(bundle, state)
    b = bundle[0]
    assert bundle_seen.remembered(state.bundle_info(), b, first.fingerprint) is not None
    st = b.stat()
    time.sleep(0.01)
    with open(b, "r+b") as f:  # in place: same inode, same size
        f.seek(st.st_size // 2)
        byte = f.read(1)
        f.seek(st.st_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime as before; the ctime moved
    assert (b.stat().st_ino, b.stat().st_size, b.stat().st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    assert bundle_seen.remembered(state.bundle_info(), b, first.fingerprint) is None
    with pytest.raises(Error):
        prepare(bundle, state)


def test_a_bundle_written_just_now_is_verified_every_time(bundle, tmp_path, full_passes):
    state = StateDir(tmp_path / "state").ensure()
    prepare(bundle, state)
    assert bundle_seen.KEY not in state.bundle_info()  # its ctime is within RACY_SECONDS
    prepare(bundle, state)
    assert full_passes == [bundle[0]]


def test_a_garbled_record_or_another_file_means_a_full_pass(bundle, tmp_path, monkeypatch, full_passes):
    monkeypatch.setattr(bundle_seen, "RACY_SECONDS", 0)
    state = StateDir(tmp_path / "state").ensure()
    prepare(bundle, state)
    info = state.bundle_info()
    for bad in ({"identity": "x", "report": info[bundle_seen.KEY]["report"]},
                {"identity": info[bundle_seen.KEY]["identity"], "report": {"fingerprint": "other"}},
                {"identity": info[bundle_seen.KEY]["identity"], "report": {"nonsense": 1, "fingerprint":
                                                                           info["fingerprint"]}}):
        state.set_bundle_info(dict(info, **{bundle_seen.KEY: bad}))
        prepare(bundle, state)
    assert len(full_passes) == 3
    copy = tmp_path / "copy.bundle.tar.zst"  # the same bytes in another file: another identity
    copy.write_bytes(bundle[0].read_bytes())
    prepare((copy, bundle[1]), state)
    assert len(full_passes) == 4 and json.loads(state.bundle_info_path.read_text())
