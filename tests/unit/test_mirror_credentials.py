"""Registry mirror credentials (password_env / password_file) and the hints when logging in or TLS goes wrong;
a version YAML read as a number."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from bundler import spec as spec_mod
from bundler.sources import credentials, images
from bundler.spec import Image
from contract.errors import Error, ValidationError
from tests.unit.test_images import digest, layer, mirror_to, mirrors, registry  # noqa: F401 (fixture)

SPEC = spec_mod.Path(__file__).resolve().parents[2] / "bundle-spec.yaml"


def test_password_file_is_read_at_use_without_its_newline(registry, tmp_path):  # noqa: F811
    reg = registry(auth="basic")
    top = reg.add_image("k8s.gcr.io/a", "1", [layer(b"a")])
    pw = tmp_path / "pw"
    rule = mirror_to(reg, username="alice", password_file=str(pw))
    pw.write_text("s3cret\n")  # written after the rule was made: read when the registry asks
    art = images.resolve(Image(ref="k8s.gcr.io/a:1"), rule, requests.Session())
    assert art.digest == digest(top)


def test_missing_password_file_at_use_is_an_error_naming_the_rule(registry, tmp_path):  # noqa: F811
    reg = registry(auth="basic")
    reg.add_image("k8s.gcr.io/a", "1", [layer(b"a")])
    rule = mirror_to(reg, username="alice", password_file=str(tmp_path / "gone"))
    with pytest.raises(Error) as e:
        images.resolve(Image(ref="k8s.gcr.io/a:1"), rule, requests.Session())
    assert "gone does not exist" in e.value.message and "alice" in e.value.context
    assert "mirrors.registries (from: k8s.gcr.io).password_file" in e.value.hint


@pytest.mark.parametrize("source", ["env", "file"])
def test_refused_login_names_the_user_and_where_the_password_came_from(registry, tmp_path, monkeypatch,  # noqa: F811
                                                                        source):
    reg = registry(auth="basic")
    reg.add_image("k8s.gcr.io/a", "1", [layer(b"a")])
    if source == "env":
        monkeypatch.setenv("REG_PW", "wrong-pass")
        rule, where = mirror_to(reg, username="alice", password_env="REG_PW"), "environment variable REG_PW"
    else:
        (tmp_path / "pw").write_text("wrong-pass\n")
        rule, where = mirror_to(reg, username="alice", password_file=str(tmp_path / "pw")), f"file {tmp_path}/pw"
    with pytest.raises(Error) as e:
        images.resolve(Image(ref="k8s.gcr.io/a:1"), rule, requests.Session())
    assert "HTTP 401" in e.value.message
    assert "user 'alice'" in e.value.hint and where in e.value.hint
    assert "wrong-pass" not in e.value.render()  # never the password


class _PlainHTTP(BaseHTTPRequestHandler):
    hits = 0

    def log_message(self, *a):
        pass

    def do_GET(self):
        type(self).hits += 1
        self.send_response(200)
        self.end_headers()


@pytest.fixture
def plain_http():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _PlainHTTP)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd.server_port
    httpd.shutdown()
    httpd.server_close()
    t.join()


def test_plain_http_mirror_without_insecure_says_so_at_once(plain_http):
    rule = mirrors(("k8s.gcr.io", f"127.0.0.1:{plain_http}/k8s.gcr.io", {}))  # insecure: false (the default)
    slept = []
    ep = images.endpoint(spec_mod.parse_ref("k8s.gcr.io/a:1"), rule)
    client = images.Registry(requests.Session(), ep.scheme, ep.host, ep.rule, sleep=slept.append)
    with pytest.raises(Error) as e:
        client.ping("resolving k8s.gcr.io/a:1")
    assert e.value.hint == "set insecure: true for this mirror (mirrors.registries (from: k8s.gcr.io))"
    assert "plain HTTP" in e.value.message and slept == []  # classified, not retried 5 times


def test_ssl_reason_is_read_from_the_exception_not_its_text():
    import ssl

    inner = ssl.SSLError(1, "something")
    inner.reason = "WRONG_VERSION_NUMBER"
    wrapped = requests.exceptions.SSLError(Exception(inner))
    assert credentials.ssl_reason(wrapped) == "WRONG_VERSION_NUMBER"
    assert credentials.ssl_reason(requests.exceptions.SSLError("[SSL: WRONG_VERSION_NUMBER] text only")) is None


def test_password_rules_of_a_mirror():
    with pytest.raises(Exception, match="both set"):
        spec_mod.RegistryMirror(**{"from": "a.io", "to": "b.io", "username": "u", "password_env": "X",
                                   "password_file": "/f"})
    with pytest.raises(Exception, match="no username"):
        spec_mod.RegistryMirror(**{"from": "a.io", "to": "b.io", "password_file": "/f"})
    assert credentials.refused_hint(None).startswith("no mirror rule applies")


def _spec_with(tmp_path, old, new):
    text = SPEC.read_text()
    assert old in text
    (tmp_path / "spec.yaml").write_text(text.replace(old, new, 1))
    return tmp_path / "spec.yaml"


def test_unreadable_password_file_is_a_validation_error_with_its_yaml_path(tmp_path):
    overlay = tmp_path / "mirrors.yaml"
    overlay.write_text("mirrors:\n  registries:\n    - {from: k8s.gcr.io, to: r.example/gcr, username: bob,\n"
                       f"       password_file: {tmp_path}/nope}}\n")
    with pytest.raises(ValidationError) as e:
        spec_mod.load(SPEC, mirrors=overlay)
    text = e.value.render()
    assert "mirrors.registries[0].password_file" in text and "does not exist" in text
    (tmp_path / "nope").write_text("pw\n")
    assert spec_mod.load(SPEC, mirrors=overlay).mirrors.registries[0].password_file == f"{tmp_path}/nope"


def test_unquoted_version_read_as_a_number_says_to_quote_it(tmp_path):
    import re

    version = re.search(r"^version: .*$", SPEC.read_text(), re.M).group(0)
    with pytest.raises(ValidationError) as e:
        spec_mod.load(_spec_with(tmp_path, version, "version: 99.1"))
    text = e.value.render()
    assert "version (line" in text and "as a number" in text and 'quote it: version: "99.1"' in text
