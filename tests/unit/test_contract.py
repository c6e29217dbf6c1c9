"""contract/: the one reference parser both programs use, and the typed errors callers branch on."""

import pytest

from contract.errors import EXIT_INVALID, DigestMismatch, Error
from contract.reference import InvalidReference, Reference, parse_ref


@pytest.mark.parametrize("text,expected", [
    ("busybox", ("docker.io", "library/busybox", "latest", None)),
    ("coredns/coredns:1.1.3", ("docker.io", "coredns/coredns", "1.1.3", None)),
    ("docker.io/coredns/coredns:1.1.3", ("docker.io", "coredns/coredns", "1.1.3", None)),
    ("localhost/x", ("localhost", "x", "latest", None)),
    ("localhost:5000/a/b:7", ("localhost:5000", "a/b", "7", None)),
    ("quay.io/coreos/flannel:v0.10.0@sha256:" + "a" * 64,
     ("quay.io", "coreos/flannel", "v0.10.0", "sha256:" + "a" * 64)),
    ("quay.io/coreos/flannel@sha256:" + "b" * 64, ("quay.io", "coreos/flannel", None, "sha256:" + "b" * 64)),
])
def test_parse(text, expected):
    r = Reference.parse(text)
    assert (r.registry, r.repository, r.tag, r.digest) == expected
    assert parse_ref(text) == r
    assert Reference.parse(str(r)) == r  # the normalized text parses to the same reference


def test_str_and_name():
    r = parse_ref("coredns/coredns:1.1.3")
    assert (r.name, str(r)) == ("docker.io/coredns/coredns", "docker.io/coredns/coredns:1.1.3")


@pytest.mark.parametrize("bad,suffix", [
    ("UPPER/case:1", " (repository names are lower-case)"),
    ("a//b", ""), ("x:", ""), ("a:b:c", ""), ("x@sha256:123", ""), ("", ""),
])
def test_invalid_is_an_error_and_a_value_error(bad, suffix):
    with pytest.raises(InvalidReference) as err:
        parse_ref(bad)
    assert isinstance(err.value, Error) and isinstance(err.value, ValueError)
    assert err.value.message == f"not a valid image reference: {bad!r}{suffix}"
    assert str(err.value) == err.value.message and err.value.exit_code == EXIT_INVALID


@pytest.mark.parametrize("raised,pinned,changed", [
    (DigestMismatch("sha256 mismatch for the key", context="verifying k"), "a" * 64, True),
    (DigestMismatch("sha256 mismatch for the key", context="verifying k"), None, False),  # nothing locked yet
    (Error("HTTP 404: a mismatch of another kind", context="downloading k"), "a" * 64, False),
])
def test_key_fetcher_branches_on_digest_mismatch(monkeypatch, raised, pinned, changed):
    """A pinned signing key that no longer hashes to its pin 'changed since the lock'; other failures pass."""
    from types import SimpleNamespace

    from bundler import fetch
    from bundler.spec import Mirrors

    def download(*args, **kwargs):
        raise raised

    monkeypatch.setattr(fetch, "_download", download)
    fetch_key = fetch._key_fetcher(SimpleNamespace(mirrors=Mirrors()), None, None, None)
    with pytest.raises(Error) as err:
        fetch_key("https://example.com/RPM-GPG-KEY", pinned, 10)
    assert ("changed since the lock was made" in err.value.message) is changed
    assert (err.value is raised) is not changed


def test_cache_check_raises_digest_mismatch():
    from bundler.cache import check

    with pytest.raises(DigestMismatch, match="size mismatch"):
        check("a" * 64, 1, "a" * 64, 2, what="w")
    with pytest.raises(DigestMismatch, match="sha256 mismatch"):
        check("a" * 64, 1, "b" * 64, 1, what="w")
