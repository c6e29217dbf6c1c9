"""The CI skip guard (tests/conftest.py): under CI=true a skip not on the allow-list fails the session."""

from pathlib import Path

import pytest

from tests.conftest import SKIP_ALLOWLIST, read_skip_allowlist

pytest_plugins = ["pytester"]

INNER_CONFTEST = "from tests.conftest import pytest_configure  # noqa: F401\n"
TESTS = """
import pytest

def test_runs():
    pass

def test_needs_kvm():
    pytest.skip("needs /dev/kvm")

@pytest.mark.skipif(True, reason="needs skopeo")
def test_needs_skopeo():
    pass

@pytest.mark.xfail(reason="known bug")
def test_known_bug():
    assert False
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_inner=TESTS)
    monkeypatch.delenv("K8S_SKIP_ALLOWLIST", raising=False)
    return pytester


def allow(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    p = pytester.path / "allow.txt"
    p.write_text(text)
    monkeypatch.setenv("K8S_SKIP_ALLOWLIST", str(p))
    return p


def test_without_ci_skips_pass(inner, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    r = inner.runpytest()
    r.assert_outcomes(passed=1, skipped=2, xfailed=1)
    assert r.ret == 0


def test_under_ci_a_skip_not_allowed_fails_the_session_and_names_it(inner, monkeypatch):
    monkeypatch.setenv("CI", "true")
    allow(inner, monkeypatch, "# nothing allowed\n")
    r = inner.runpytest()
    r.assert_outcomes(passed=1, skipped=2, xfailed=1)  # the outcomes stay; the session fails
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    r.stdout.fnmatch_lines(["*skips not allowed under CI*", "2 skipped, not on *allow.txt*",
                            "  test_inner.py::test_needs_kvm: needs /dev/kvm",
                            "  test_inner.py::test_needs_skopeo: needs skopeo", "hint: install what*"])
    assert "test_known_bug" not in r.stdout.str().split("skips not allowed under CI")[1]  # xfail is no skip


def test_under_ci_allowed_skips_pass_only_for_their_reason(inner, monkeypatch):
    monkeypatch.setenv("CI", "true")
    allow(inner, monkeypatch, "# kvm is not in CI\ntest_inner.py::test_needs_kv* needs /dev/kvm\n"
                              "test_inner.py::test_needs_skopeo needs docker*\n")
    r = inner.runpytest()
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    out = r.stdout.str()
    assert "test_needs_skopeo: needs skopeo" in out and "test_needs_kvm:" not in out
    allow(inner, monkeypatch, "test_inner.py::test_needs_* needs *\n")
    assert inner.runpytest().ret == 0


def test_under_ci_a_skipped_module_counts_too(pytester, monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv("K8S_SKIP_ALLOWLIST", raising=False)
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_mod="import pytest\npytest.skip('needs zstd', allow_module_level=True)\n")
    allow(pytester, monkeypatch, "")
    r = pytester.runpytest()
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    r.stdout.fnmatch_lines(["  test_mod.py: needs zstd"])
    allow(pytester, monkeypatch, "test_mod.py needs zstd\n")
    assert pytester.runpytest().ret == pytest.ExitCode.NO_TESTS_COLLECTED  # pytest's own code, not ours


def test_under_ci_failures_keep_their_exit_code(pytester, monkeypatch):
    monkeypatch.setenv("CI", "true")
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_f="import pytest\ndef test_a():\n    pytest.skip('x')\ndef test_b():\n    1/0\n")
    allow(pytester, monkeypatch, "")
    assert pytester.runpytest().ret == pytest.ExitCode.TESTS_FAILED
    pytester.makepyfile(test_f="def test_a():\n    pass\n")
    assert pytester.runpytest("-k", "nothing").ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_an_entry_without_a_reason_is_a_usage_error(inner, monkeypatch):
    monkeypatch.setenv("CI", "true")
    allow(inner, monkeypatch, "test_inner.py::test_needs_kvm\n")
    r = inner.runpytest()
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*allow.txt:1: 'test_inner.py::test_needs_kvm' needs a skip-reason glob*"])


def test_the_project_allow_list_parses(tmp_path):
    assert isinstance(read_skip_allowlist(SKIP_ALLOWLIST), list)
    with pytest.raises(pytest.UsageError):
        read_skip_allowlist(tmp_path / "missing.txt")
