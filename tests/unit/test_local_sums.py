"""The sums of the extracted executables kept with each file's identity: an unchanged file is not hashed again, a
changed byte is still caught (its ctime moved, even with size and mtime put back), a racy or garbled record is
never trusted."""

from __future__ import annotations

import hashlib
import json
import os
import time

from installer import local_sums


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def later():  # the files were written "long ago": outside the racy window
    return time.time() + 10


def test_an_unchanged_file_is_answered_from_the_record(tmp_path):
    f = tmp_path / "kubelet"
    f.write_bytes(b"k" * 5000)
    s = local_sums.Sums(tmp_path, clock=later)
    assert s.sha256(f) == sha(b"k" * 5000) and s.hashed == ["kubelet"]
    s.save()
    assert oct((tmp_path / local_sums.NAME).stat().st_mode & 0o777) == "0o600"
    again = local_sums.Sums(tmp_path, clock=later)
    assert again.sha256(f) == sha(b"k" * 5000) and again.hashed == []


def test_a_changed_byte_is_caught_with_size_and_mtime_put_back(tmp_path):
    f = tmp_path / "kubelet"
    f.write_bytes(b"k" * 5000)
    s = local_sums.Sums(tmp_path, clock=later)
    s.sha256(f)
    s.save()
    st = f.stat()
    time.sleep(0.01)
    with open(f, "r+b") as fh:  # in place: same inode, same size
        fh.seek(4096)
        fh.write(b"X")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back; ctime cannot be
    assert f.stat().st_mtime_ns == st.st_mtime_ns and f.stat().st_ino == st.st_ino
    again = local_sums.Sums(tmp_path, clock=later)
    want = b"k" * 4096 + b"X" + b"k" * 903
    assert again.sha256(f) == sha(want) and again.hashed == ["kubelet"]


def test_a_replaced_file_is_hashed_again(tmp_path):
    f = tmp_path / "etcd"
    f.write_bytes(b"old")
    s = local_sums.Sums(tmp_path, clock=later)
    s.sha256(f)
    s.save()
    (tmp_path / "new").write_bytes(b"new")
    os.replace(tmp_path / "new", f)
    assert local_sums.Sums(tmp_path, clock=later).sha256(f) == sha(b"new")


def test_a_file_changed_just_now_is_hashed_but_not_recorded(tmp_path):
    f = tmp_path / "flanneld"
    f.write_bytes(b"f")
    s = local_sums.Sums(tmp_path)  # the real clock: the file's ctime is within RACY_SECONDS
    assert s.sha256(f) == sha(b"f")
    s.save()
    again = local_sums.Sums(tmp_path, clock=later)
    again.sha256(f)
    assert again.hashed == ["flanneld"]


def test_a_garbled_or_foreign_record_means_hash_it(tmp_path):
    f = tmp_path / "kubectl"
    f.write_bytes(b"c")
    s = local_sums.Sums(tmp_path, clock=later)
    s.sha256(f)
    s.save()
    rec = json.loads((tmp_path / local_sums.NAME).read_text())
    for bad in ({"kubectl": {"id": rec["kubectl"]["id"], "sha256": "0" * 63}},
                {"kubectl": {"id": rec["kubectl"]["id"], "sha256": "Z" * 64}}, ["not", "a", "dict"], "garbage"):
        (tmp_path / local_sums.NAME).write_text(json.dumps(bad) if bad != "garbage" else "{garbage")
        again = local_sums.Sums(tmp_path, clock=later)
        assert again.sha256(f) == sha(b"c") and again.hashed == ["kubectl"]
