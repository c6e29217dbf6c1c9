"""Fixtures shared by the integration tests."""

from typing import Iterator

import pytest
import requests


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    """A requests session for the loopback stand-ins (never through a proxy); modules may override it."""
    s = requests.Session()
    s.trust_env = False
    yield s
    s.close()
