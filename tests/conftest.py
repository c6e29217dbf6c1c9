"""Shared pytest fixtures."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

# Builds (tarballs, RPM repos, registry storage) are cached here across sessions; servers are per session.
UPSTREAM_CACHE = Path(os.environ.get("UPSTREAM_CACHE", "/var/tmp/k8s-offline-upstream-cache"))
# The static installer takes a minute to build: every bundle a test builds shares one per source digest.
os.environ.setdefault("K8S_OFFLINE_STATIC_CACHE", "/var/tmp/k8s-offline-static-cache")


@pytest.fixture(scope="session")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator["object"]:
    """Local stand-ins for every real upstream (HTTP mirror, yum repos, registries), once per session."""
    from tests.fixtures.upstream import start

    u = start(tmp_path_factory.mktemp("upstreams"), cache=UPSTREAM_CACHE)
    try:
        yield u
    finally:
        u.stop()
