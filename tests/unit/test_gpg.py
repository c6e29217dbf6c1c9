"""RPM signature verdicts from rpmkeys output, pinned-key checks and the lock's trust fields (no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundler.lock import LockedRepo, LockedRpm
from bundler.sources import gpg
from contract.errors import Error

FPR = "4B22DB8DBCB756E4852901E2726B9597A2BEDCB7"
OTHER = "6341AB2753D78A78A7C27BB124C6A8A7F4A80EB5"
KEY = gpg.KeyFile(Path("key.asc"), (FPR,), {FPR: FPR})

SIGNED = """/c/a.rpm:
    Header V4 RSA/SHA256 Signature, key ID a2bedcb7: OK
    Header SHA256 digest: OK
    Payload SHA256 digest: OK
    V4 RSA/SHA256 Signature, key ID a2bedcb7: OK
    MD5 digest: OK
"""


def verdict(text: str) -> gpg._Checked:
    (lines,) = gpg._parse_rpmkeys(text).values()
    return gpg._judge(lines, [KEY])


@pytest.mark.parametrize("text, signers, problem", [
    (SIGNED, (FPR,), None),
    ("/c/a.rpm:\n    Header SHA256 digest: OK\n    Payload SHA256 digest: OK\n    MD5 digest: OK\n",
     (), "unsigned"),
    ("/c/a.rpm:\n    Header V4 RSA/SHA256 Signature, key ID f1b88881: NOKEY\n    MD5 digest: OK\n",
     (), "key ID f1b88881, which is not a key pinned"),
    ("/c/a.rpm:\n    Header V4 RSA/SHA256 Signature, key ID a2bedcb7: OK\n    Payload SHA256 digest: BAD\n"
     "    V4 RSA/SHA256 Signature, key ID a2bedcb7: BAD\n", (FPR,), "Signature by key ID a2bedcb7 is BAD"),
    ("/c/a.rpm:\n    Header V4 RSA/SHA256 Signature, key ID a2bedcb7: OK\n    MD5 digest: BAD\n",
     (FPR,), "MD5 digest is BAD"),
])
def test_rpmkeys_verdicts(text: str, signers: tuple, problem: str) -> None:
    got = verdict(text)
    assert got.signers == signers
    if problem is None:
        assert got.problems == ()
    else:
        assert any(problem in p for p in got.problems), got.problems


def test_rpmkeys_output_is_split_per_file() -> None:
    blocks = gpg._parse_rpmkeys(SIGNED + SIGNED.replace("/c/a.rpm", "/c/b c.rpm"))
    assert list(blocks) == ["/c/a.rpm", "/c/b c.rpm"] and len(blocks["/c/b c.rpm"]) == 5


def test_key_ids_map_to_their_primary() -> None:
    sub = "1111222233334444555566667777888899990000"
    key = gpg.KeyFile(Path("k"), (FPR,), {FPR: FPR, sub: FPR})
    assert key.primary_for("A2BEDCB7") == FPR and key.primary_for("99990000") == FPR
    assert key.primary_for("deadbeef") is None


def test_pinned_fingerprint_mismatch_names_both() -> None:
    gpg.check_pinned(KEY, "base", "http://k", [FPR.lower()])
    with pytest.raises(Error) as e:
        gpg.check_pinned(KEY, "base", "http://k", [OTHER])
    text = e.value.render()
    assert "repo 'base'" in text and f"expected fingerprint: {OTHER}" in text and f"actual fingerprint:   {FPR}" in text


def test_gpgcheck_repo_without_a_key_is_refused() -> None:
    class R:
        name, gpgcheck, gpgkey, fingerprints = "base", True, None, ()

    with pytest.raises(Error, match="pins no key"):
        gpg.trust_for([R()], fetch_key=lambda *a: pytest.fail("nothing to download"))
    R.gpgcheck = False
    assert gpg.trust_for([R()], fetch_key=lambda *a: pytest.fail("no key for gpgcheck off"))["base"].keys == ()


def test_lock_signature_field() -> None:
    base = dict(name="a", version="1", release="1", arch="x86_64", repo="base", url="http://x/a.rpm",
                sha256="0" * 64, size=1)
    assert LockedRpm(**base, signature=FPR).signature == FPR
    assert LockedRpm(**base, signature="unchecked").signature == "unchecked"
    assert LockedRpm(**base).signature is None
    with pytest.raises(ValueError):
        LockedRpm(**base, signature="a2bedcb7")
    with pytest.raises(ValueError):
        LockedRepo(name="base", baseurl="http://x/", gpgcheck=True, fingerprints=("a2bedcb7",))
