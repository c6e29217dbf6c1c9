"""`installer seed` against a real registry behind the Harbor API stand-in, read back with skopeo."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.harbor import layout as test_layout
from tests.fixtures.harbor import registry as harbor_registry

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(not harbor_registry.available(), reason="docker-registry/skopeo/htpasswd missing")


def seed(*args):
    return subprocess.run([str(BIN / "installer"), "seed", *map(str, args)], capture_output=True, text=True)


def test_seed_creates_the_project_pushes_once_and_digests_match(tmp_path):
    digests = test_layout.build_layout(tmp_path / "layout")
    with harbor_registry.start_registry(tmp_path / "reg", tls=True, auth="token", harbor_api="2.0",
                                        creation_restricted=False, projects=[]) as reg:
        pw = tmp_path / "pw"
        pw.write_text(harbor_registry.ADMIN_PASSWORD + "\n")
        args = [tmp_path / "layout", "--registry", reg.endpoint, "--project", "kubernetes", "--api-url",
                reg.api_url, "--username", harbor_registry.ADMIN, "--password-file", pw, "--ca-file", reg.ca_file,
                "--json"]
        r = seed(*args)
        assert r.returncode == 0, r.stderr
        first = json.loads(r.stdout)
        r = seed(*args)
        assert r.returncode == 0, r.stderr
        second = json.loads(r.stdout)
        assert json.dumps(second).count('"bytes_pushed": 0') >= 1 and first != second
        for ref, digest in digests.items():
            name = ref.rsplit("/", 1)[-1]
            raw = reg.skopeo_raw(f"kubernetes/{name}")
            assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest, ref
        wrong = tmp_path / "wrong"
        wrong.write_text("not-the-password\n")
        r = seed(*args[:-5], "--password-file", wrong, "--ca-file", reg.ca_file)
        assert r.returncode == 1 and "hint:" in r.stderr and "Traceback" not in r.stderr


def test_seed_needs_a_key_for_a_bundle_file(tmp_path):
    (tmp_path / "b.bundle.tar.zst").write_bytes(b"x")
    r = seed(tmp_path / "b.bundle.tar.zst", "--registry", "127.0.0.1:9", "--insecure")
    assert r.returncode == 1 and "--pub" in r.stderr


def test_seed_takes_registry_credentials_and_ca_from_the_inventory(tmp_path):
    import yaml

    digests = test_layout.build_layout(tmp_path / "layout")
    with harbor_registry.start_registry(tmp_path / "reg", tls=True, auth="htpasswd") as reg:
        pw = tmp_path / "pw"
        pw.write_text(harbor_registry.ADMIN_PASSWORD + "\n")
        inv = yaml.safe_load((Path(__file__).resolve().parents[2] / "inventory.example.yaml").read_text())
        inv["registry"] = {"mode": "external", "hostname": "registry.invalid", "address": "127.0.0.1",
                           "port": reg.port, "project": "kubernetes", "ca_file": str(reg.ca_file),
                           "username": harbor_registry.ADMIN, "password_file": str(pw)}
        (tmp_path / "inv.yaml").write_text(yaml.safe_dump(inv))
        r = seed(tmp_path / "layout", "-i", tmp_path / "inv.yaml", "--state", tmp_path / "state", "--json")
        assert r.returncode == 0, r.stderr
        for ref, digest in digests.items():
            raw = reg.skopeo_raw(f"kubernetes/{ref.rsplit('/', 1)[-1]}")
            assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest, ref
        r = seed(tmp_path / "layout", "-i", tmp_path / "inv.yaml", "--registry", "x:1")
        assert r.returncode == 1 and "exclude each other" in r.stderr
