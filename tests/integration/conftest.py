"""Fixtures shared by the integration tests."""

import os
from pathlib import Path
from typing import Iterator

import pytest
import requests

STATIC_CACHE = Path(os.environ.get("K8S_OFFLINE_STATIC_CACHE", "/var/tmp/k8s-offline-static-cache"))


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    """A requests session for the loopback stand-ins (never through a proxy); modules may override it."""
    s = requests.Session()
    s.trust_env = False
    yield s
    s.close()


@pytest.fixture(scope="session")
def static_exe() -> Path:
    """The static executable for the current sources (a cache hit unless installer/ or static/ changed)."""
    from bundler import static

    reason = static.unavailable()
    if reason:
        pytest.skip(f"cannot build the static installer here: {reason}")
    return static.ensure_static(STATIC_CACHE, log=print)
