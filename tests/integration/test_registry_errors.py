"""Each way seeding can fail against a REAL registry (and the Harbor stand-in) gives an Error with its hint."""

from __future__ import annotations

import pytest
import requests

from contract.errors import Error
from installer.registry.client import RegistryClient
from installer.registry.harbor import HarborAPI
from installer.registry.seed import push_missing
from tests.fixtures.harbor import layout as L
from tests.fixtures.harbor.pki import make_ca
from tests.fixtures.harbor.registry import DEV, DEV_PASSWORD, available, start_registry
from tests.fixtures.upstream import procs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not available(), reason="needs docker-registry, skopeo and htpasswd"),
]


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "layout"
    L.build_layout(root)
    return root


def seed_error(root, url, session, project="kubernetes", **kwargs) -> Error:
    with pytest.raises(Error) as err:
        push_missing(root, RegistryClient(url, session, **kwargs), project)
    print(err.value.render())
    return err.value


def test_wrong_password_basic_auth(tmp_path, layout):
    with start_registry(tmp_path / "reg", tls=True, auth="htpasswd") as reg:
        e = seed_error(
            layout, reg.url, reg.session(), username="admin", password="wrong", verify=str(reg.ca_file)
        )
        assert "refused the credentials of user 'admin'" in e.message
        assert "registry.password_file" in e.hint


@pytest.mark.parametrize("api", ["1.4", "2.0"])
def test_wrong_password_token_service_and_api(tmp_path, layout, api):
    with start_registry(tmp_path / "reg", tls=False, auth="token", harbor_api=api) as reg:
        e = seed_error(layout, reg.url, reg.session(), username="admin", password="wrong")
        assert "token service" in e.message and "refused the credentials" in e.message
        assert "registry.password_file" in e.hint
        with pytest.raises(Error) as err:
            HarborAPI(reg.api_url, reg.session(), username="admin", password="wrong").ensure_project(
                "kubernetes"
            )
        assert "refused the credentials" in err.value.message and "password_file" in err.value.hint


def test_untrusted_certificate_names_the_ca_file(tmp_path, layout):
    with start_registry(tmp_path / "reg", tls=True) as reg:
        e = seed_error(layout, reg.url, reg.session())  # system CAs only
        assert "not trusted" in e.message and "registry.ca_file" in e.hint
        other_ca, _ = make_ca(tmp_path, "other-ca")
        e = seed_error(layout, reg.url, reg.session(), verify=str(other_ca))
        assert str(other_ca) in e.hint and "registry.ca_file" in e.hint


def test_unreachable_registry_names_host_and_port(tmp_path, layout):
    port = procs.free_port()  # nothing listens there
    session = requests.Session()
    session.trust_env = False
    e = seed_error(layout, f"http://127.0.0.1:{port}", session, timeout=5)
    assert f"127.0.0.1:{port}" in e.message and "cannot reach" in e.message
    assert "registry.hostname/port" in e.hint


@pytest.mark.parametrize("api", ["1.4", "2.0"])
def test_project_creation_forbidden(tmp_path, api):
    with start_registry(tmp_path / "reg", tls=False, auth="token", harbor_api=api) as reg:
        harbor = HarborAPI(reg.api_url, reg.session(), username=DEV, password=DEV_PASSWORD)
        with pytest.raises(Error) as err:
            harbor.ensure_project("kubernetes")
        print(err.value.render())
        assert "may not create the project 'kubernetes'" in err.value.message
        assert "registry.project" in err.value.hint


def test_wrong_project_push_denied(tmp_path, layout):
    """Harbor grants push only on existing projects: seeding into a missing one fails with a hint."""
    with start_registry(tmp_path / "reg", tls=False, auth="token", harbor_api="2.0") as reg:
        e = seed_error(
            layout,
            reg.url,
            reg.session(),
            project="no-such-project",
            username=reg.username,
            password=reg.password,
        )
        assert "may not push to no-such-project/" in e.message
        assert "'no-such-project' does not exist" in e.hint and "registry.project" in e.hint


def test_invalid_project_name_refused(tmp_path):
    with start_registry(tmp_path / "reg", tls=False, auth="token", harbor_api="1.4") as reg:
        harbor = HarborAPI(reg.api_url, reg.session(), username=reg.username, password=reg.password)
        with pytest.raises(Error) as err:
            harbor.ensure_project("Bad_Name!")
        assert "refused the project name" in err.value.message and "registry.project" in err.value.hint


def test_storage_error_maps_to_storage_full(tmp_path, layout):
    """The registry's file writes fail (RLIMIT_FSIZE: EFBIG, as ENOSPC would): the storage hint shows."""
    with start_registry(tmp_path / "reg", tls=False, fsize_limit=1_000_000) as reg:
        e = seed_error(layout, reg.url, reg.session())
        assert "out of storage space" in e.message and "free space" in e.hint
        assert any("file too large" in d for d in e.details)


def test_not_harbor(tmp_path):
    with start_registry(tmp_path / "reg", tls=False) as reg:
        with pytest.raises(Error) as err:
            HarborAPI(reg.url, reg.session()).ensure_project("kubernetes")
        assert "no Harbor API" in err.value.message
