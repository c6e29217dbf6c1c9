"""contract/registry*.py: the one registry v2 client (retries, challenge, tokens with expiry, typed errors)."""

from __future__ import annotations

import io
import json

import pytest
import requests

from contract import registry_transport as transport
from contract.errors import DigestMismatch
from contract.registry import RegistryClient, RegistryError, UnexpectedStatus, sha256_digest


class Resp:
    def __init__(self, status, body=b"", headers=None, url=""):
        self.status_code, self.headers, self.url = status, dict(headers or {}), url
        self.content = body
        self.text = body.decode()
        self.raw = _Raw(body)

    def json(self):
        return json.loads(self.content)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


class _Raw(io.BytesIO):
    def read(self, n=-1, decode_content=False):
        return super().read(n)

    def stream(self, n, decode_content=False):
        while True:
            chunk = super().read(n)
            if not chunk:
                return
            yield chunk


class Session:
    """Answers from a script: url path -> list of answers (a Resp, or an exception to raise), used in order."""

    def __init__(self, script):
        self.script = {k: list(v) for k, v in script.items()}
        self.calls = []

    def request(self, method, url, **kw):
        path = url.split("://", 1)[-1].split("/", 1)[-1]
        self.calls.append((method, "/" + path, kw))
        answers = self.script["/" + path]
        a = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(a, Exception):
            raise a
        return a


BEARER = {"Www-Authenticate": 'Bearer realm="https://auth.example/token",service="reg"'}


def client(script, **kw):
    kw.setdefault("sleep", slept.append)
    return RegistryClient("https://reg.example", Session(script), **kw)


slept: list = []


@pytest.fixture(autouse=True)
def _reset_sleeps():
    slept.clear()


def test_retries_back_off_on_5xx_429_and_resets_then_succeed():
    c = client({"/v2/": [Resp(200)],
                "/v2/a/manifests/1": [Resp(503), Resp(429), requests.ConnectionError("reset"), Resp(200, b"{}")]},
               retries=4, check_login=False)
    body, _, _ = c.pull_manifest("a", "1", "t")
    assert body == b"{}" and slept == [0.5, 1.0, 2.0]


def test_retries_exhausted_is_a_registry_error_with_attributes():
    c = client({"/v2/": [Resp(200)], "/v2/a/manifests/1": [Resp(500)]}, retries=2, check_login=False)
    with pytest.raises(RegistryError) as err:
        c.pull_manifest("a", "1", "resolving a:1")
    e = err.value
    assert "gave up after 3 attempts" in e.message and "HTTP 500" in e.details[0]
    assert (e.operation, e.url) == ("resolving a:1", "https://reg.example/v2/a/manifests/1")
    assert slept == [0.5, 1.0]


def test_without_retries_the_caller_gets_the_answer_as_unexpected_status():
    c = client({"/v2/": [Resp(200)], "/v2/a/manifests/1": [Resp(404)]}, check_login=False)
    with pytest.raises(UnexpectedStatus) as err:
        c.pull_manifest("a", "1", "t")
    assert err.value.status == 404 and slept == []


def test_bearer_tokens_are_cached_until_shortly_before_they_expire(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(transport.time, "monotonic", lambda: now[0])
    token = Resp(200, json.dumps({"token": "t1", "expires_in": 60}).encode())
    c = client({"/v2/": [Resp(401, headers=BEARER)], "/token": [token], "/v2/a/blobs/sha256:x": [Resp(404)]})
    for _ in range(2):
        assert c.blob_size("a", "sha256:x") is None
    tokens = [kw for m, p, kw in c.session.calls if p == "/token"]
    assert len(tokens) == 2  # the scope-less login token, then one for repository:a:pull,push
    assert ("scope", "repository:a:pull,push") in tokens[1]["params"] and ("service", "reg") in tokens[1]["params"]
    now[0] += 60 - transport.TOKEN_MARGIN + 1
    c.blob_size("a", "sha256:x")
    assert len([p for _, p, _ in c.session.calls if p == "/token"]) == 3  # expired: fetched anew


def test_a_401_adds_the_scope_the_registry_names():
    wanted = {"Www-Authenticate": BEARER["Www-Authenticate"] + ',scope="repository:b:pull"'}
    token = Resp(200, json.dumps({"token": "t"}).encode())
    c = client({"/v2/": [Resp(401, headers=BEARER)], "/token": [token],
                "/v2/a/blobs/uploads/": [Resp(401, headers=wanted), Resp(201)]})
    assert c.mount_blob("a", "sha256:x", "b") is None
    scopes = [[v for k, v in kw["params"] if k == "scope"] for _, p, kw in c.session.calls if p == "/token"]
    assert scopes[-1] == ["repository:a:pull,push", "repository:b:pull"]


def test_basic_auth_and_missing_credentials():
    basic = {"Www-Authenticate": 'Basic realm="r"'}
    c = client({"/v2/": [Resp(401, headers=basic), Resp(200)]}, username="u", password="p")
    assert c.ping().scheme == "basic"
    assert c.session.calls[-1][2]["headers"]["Authorization"].startswith("Basic ")
    c = client({"/v2/": [Resp(401, headers=basic)]})
    with pytest.raises(RegistryError, match="requires credentials") as err:
        c.ping()
    assert err.value.status == 401


def test_tls_failure_is_not_retried():
    c = client({"/v2/": [requests.exceptions.SSLError("bad cert")]}, retries=4)
    with pytest.raises(RegistryError, match="not trusted"):
        c.ping()
    assert slept == []


def test_pull_blob_verifies_size_and_digest():
    data = b"layer bytes"
    good = sha256_digest(data)
    got = []

    class Writer:
        def __enter__(self):
            return self

        def write(self, chunk):
            got.append(chunk)

        def __exit__(self, *exc):
            return None

    c = client({"/v2/": [Resp(200)], f"/v2/a/blobs/{good}": [Resp(200, data)],
                "/v2/a/blobs/sha256:" + "0" * 64: [Resp(200, data)]}, check_login=False)
    assert c.pull_blob("a", good, len(data), Writer, "t") == len(data) and b"".join(got) == data
    with pytest.raises(DigestMismatch, match="sha256 mismatch"):
        c.pull_blob("a", "sha256:" + "0" * 64, len(data), Writer, "t")
    with pytest.raises(DigestMismatch, match="size mismatch"):
        c.pull_blob("a", good, len(data) - 1, Writer, "t")


def test_a_blob_the_registry_cannot_read_counts_as_missing():
    """docker-registry killed while it wrote a blob's link answers HEAD with 500 until the blob is pushed again."""
    c = client({"/v2/": [Resp(200)], "/v2/a/blobs/sha256:x": [Resp(500)], "/v2/a/blobs/sha256:y": [Resp(503)]},
               check_login=False)
    assert c.blob_size("a", "sha256:x") is None
    with pytest.raises(UnexpectedStatus) as err:  # the whole registry failing is still an error
        c.blob_size("a", "sha256:y")
    assert err.value.status == 503
