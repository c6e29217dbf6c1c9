"""Shared pytest fixtures, and the CI guard that fails a session on a skip the allow-list does not name."""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Iterator

import pytest

# Builds (tarballs, RPM repos, registry storage) are cached here across sessions; servers are per session.
UPSTREAM_CACHE = Path(os.environ.get("UPSTREAM_CACHE", "/var/tmp/k8s-offline-upstream-cache"))
# The static installer takes a minute to build: every bundle a test builds shares one per source digest.
os.environ.setdefault("K8S_OFFLINE_STATIC_CACHE", "/var/tmp/k8s-offline-static-cache")


@pytest.fixture(scope="session", autouse=True)
def installer_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The static executable unpacks itself into a cache of this session, not into ~/.cache (static/README.md)."""
    old = os.environ.get("K8S_OFFLINE_INSTALLER_CACHE")
    path = tmp_path_factory.mktemp("installer-cache")
    os.environ["K8S_OFFLINE_INSTALLER_CACHE"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("K8S_OFFLINE_INSTALLER_CACHE", None)
        else:
            os.environ["K8S_OFFLINE_INSTALLER_CACHE"] = old


@pytest.fixture(scope="session")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator["object"]:
    """Local stand-ins for every real upstream (HTTP mirror, yum repos, registries), once per session."""
    from tests.fixtures.upstream import start

    u = start(tmp_path_factory.mktemp("upstreams"), cache=UPSTREAM_CACHE)
    try:
        yield u
    finally:
        u.stop()


# ------------------------------------------------------------------ CI: no test may skip unless allow-listed
# Under CI=true every skipped test (or module) must match a line of tests/skip_allowlist.txt, else the session
# fails: a tool `make setup` installs that went missing must not turn a test into a silent skip.
SKIP_ALLOWLIST = Path(__file__).with_name("skip_allowlist.txt")


def read_skip_allowlist(path: Path) -> list:
    """[(nodeid glob, skip-reason glob)] from `<nodeid-glob> <reason-glob>` lines; '#' starts a comment line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise pytest.UsageError(f"cannot read the skip allow-list {path}: {e.strerror}") from None
    entries = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern, _, reason = line.partition(" ")
        if not reason.strip():
            raise pytest.UsageError(f"{path}:{n}: {pattern!r} needs a skip-reason glob after it "
                                    "(`*` for any reason; say why on a comment line above)")
        entries.append((pattern, reason.strip()))
    return entries


class SkipGuard:
    """Collects skips (tests and whole modules) and fails the session on any the allow-list does not name."""

    def __init__(self, allowlist: Path) -> None:
        self.allowlist = allowlist
        self.entries = read_skip_allowlist(allowlist)
        self.unexpected: list = []

    def _note(self, report) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason
        if not any(fnmatch.fnmatchcase(report.nodeid, p) and fnmatch.fnmatchcase(reason, r)
                   for p, r in self.entries):
            self.unexpected.append((report.nodeid, reason))

    def pytest_runtest_logreport(self, report) -> None:
        self._note(report)

    def pytest_collectreport(self, report) -> None:
        self._note(report)

    def pytest_sessionfinish(self, session) -> None:
        if self.unexpected and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.unexpected:
            return
        tr = terminalreporter
        tr.section("skips not allowed under CI", red=True)
        tr.line(f"{len(self.unexpected)} skipped, not on {self.allowlist} (under CI=true every test must run):")
        for nodeid, reason in self.unexpected:
            tr.line(f"  {nodeid}: {reason}")
        tr.line("hint: install what `make setup` installs; or, if it cannot run in CI at all, add "
                f"`<nodeid-glob> <reason-glob>` with a comment saying why to {self.allowlist}")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CI", "").lower() == "true" and not hasattr(config, "workerinput"):  # xdist: controller
        allowlist = Path(os.environ.get("K8S_SKIP_ALLOWLIST") or SKIP_ALLOWLIST)
        config.pluginmanager.register(SkipGuard(allowlist), "k8s-offline-skip-guard")
