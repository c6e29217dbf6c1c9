"""The stand-in apiserver's etcd v3 client (EtcdV3, gRPC) against a real etcd 3.4 with TLS, client-cert auth
and etcd's v3 authentication on: the certificate's CN is the etcd user, as for the real kube-apiserver.

EtcdV3 needs Debian's python3-grpcio, installed for /usr/bin/python3 (the stand-ins' interpreter) and not in
the test venv, so the client runs in a /usr/bin/python3 child that loads the runtime (_runtime) and performs
a list of operations, printing each result (or the exception it raised) as JSON.
"""

import json
import subprocess
from pathlib import Path

import pytest
import requests

from tests.fixtures import standins
from tests.fixtures.standins import testing

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/usr/bin/etcd").exists(), reason="needs /usr/bin/etcd"),
]

ROOT = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"

DRIVER = r"""
import json, sys
from tests.fixtures.standins import _runtime as rt
servers, ca, cert, key, ops = json.loads(sys.argv[1])
client = rt.EtcdV3(servers, ca, cert, key, timeout=3.0)
out = []
for op, *args in ops:
    try:
        if op in ("create", "update"):
            args[1] = args[1].encode()
        res = getattr(client, op)(*args)
        if op == "get" and res is not None:
            res = [res[0].decode(), res[1]]
        if op == "list":
            res = [[[k, v.decode(), r] for k, v, r in res[0]], res[1]]
        out.append({"ok": res})
    except Exception as exc:
        out.append({"error": type(exc).__name__, "message": str(exc),
                    "is_etcd_error": isinstance(exc, rt.EtcdError)})
client.close()
print(json.dumps(out))
"""


def run_client(servers, ca, cert, key, ops):
    res = subprocess.run([PYTHON, "-c", DRIVER, json.dumps([servers, ca, cert, key, ops])], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    """A real etcd with TLS + --client-cert-auth, users root and kube-apiserver-etcd-client (role root) and
    auth enabled; yields (url, pki, processes, directory)."""
    root = tmp_path_factory.mktemp("etcd-auth")
    procs = testing.Processes(root / "logs")
    pki = testing.Pki(root / "pki")
    try:
        proc, url = testing.start_etcd(procs, pki, str(root / "data"), "etcd-auth")
        admin_cert, admin_key = pki.issue("admin", "etcd-admin")
        testing.wait_until(
            lambda: requests.get(url + "/health", verify=pki.ca, cert=(admin_cert, admin_key), timeout=2).ok,
            15, what="etcd healthy (log: %s)" % proc.log_path)

        def etcdctl(*args):
            res = subprocess.run(["etcdctl", "--endpoints=" + url, "--cacert=" + pki.ca, "--cert=" + admin_cert,
                                  "--key=" + admin_key, *args], capture_output=True, text=True, timeout=30)
            assert res.returncode == 0, (args, res.stdout, res.stderr)
            return res.stdout

        for user in ("root", "kube-apiserver-etcd-client"):
            etcdctl("user", "add", user + ":not-used-by-certificates", "--interactive=false")
            etcdctl("user", "grant-role", user, "root")
        etcdctl("auth", "enable")
        yield url, pki, procs, root
    finally:
        procs.stop_all()


def test_the_apiserver_client_certificate_can_read_and_write(etcd):
    url, pki = etcd[:2]
    cert, key = pki.issue("apiserver-etcd-client", "kube-apiserver-etcd-client")
    ops = [
        ["create", "/registry/t/ns/a", "one"],
        ["create", "/registry/t/ns/a", "again"],  # exists: not created
        ["get", "/registry/t/ns/a"],
        ["create", "/registry/t/ns/b", "two"],
        ["create", "/registry/t/nsx", "not under the prefix"],
        ["list", "/registry/t/ns/"],
    ]
    res = run_client([url], pki.ca, cert, key, ops)
    assert all("ok" in r for r in res), res
    rev_a = res[0]["ok"]
    assert isinstance(rev_a, int) and rev_a > 0
    assert res[1]["ok"] is None
    assert res[2]["ok"] == ["one", rev_a]
    rev_b = res[3]["ok"]
    items, list_rev = res[5]["ok"]
    assert items == [["/registry/t/ns/a", "one", rev_a], ["/registry/t/ns/b", "two", rev_b]]
    assert list_rev >= res[4]["ok"] > rev_b

    ops = [
        ["update", "/registry/t/ns/a", "stale", rev_a - 1],  # compare-and-swap on mod_revision fails
        ["update", "/registry/t/ns/a", "uno", rev_a],
        ["get", "/registry/t/ns/a"],
        ["delete", "/registry/t/ns/a"],
        ["delete", "/registry/t/ns/a"],
        ["get", "/registry/t/ns/a"],
    ]
    res = run_client([url], pki.ca, cert, key, ops)
    assert all("ok" in r for r in res), res
    assert res[0]["ok"] is None
    new_rev = res[1]["ok"]
    assert new_rev > rev_a and res[2]["ok"] == ["uno", new_rev]
    assert [r["ok"] for r in res[3:]] == [1, 0, None]
    health = run_client([url], pki.ca, cert, key, [["health", url]])
    assert health[0]["ok"][0] is True, health


def test_a_certificate_of_no_etcd_user_is_denied_not_served_an_empty_result(etcd):
    url, pki = etcd[:2]
    cert, key = pki.issue("flanneld-etcd-client", "flanneld")
    res = run_client([url], pki.ca, cert, key, [
        ["get", "/registry/t/ns/b"], ["list", "/registry/"], ["create", "/registry/t/x", "x"],
        ["delete", "/registry/t/ns/b"],
    ])
    for r in res:
        assert r["error"] == "EtcdError" and r["is_etcd_error"], res
        assert "permission denied" in r["message"] and "PERMISSION_DENIED" in r["message"], res


def test_an_unreachable_endpoint_fails_over_to_the_next_and_none_is_etcd_unavailable(etcd):
    url, pki = etcd[:2]
    cert, key = pki.issue("apiserver-etcd-client-2", "kube-apiserver-etcd-client")
    dead = "https://127.0.0.1:%d" % testing.free_port()
    res = run_client([dead, url], pki.ca, cert, key, [["create", "/registry/t/failover", "v"],
                                                       ["get", "/registry/t/failover"]])
    assert isinstance(res[0]["ok"], int) and res[1]["ok"] == ["v", res[0]["ok"]], res
    res = run_client([dead], pki.ca, cert, key, [["get", "/registry/t/failover"]])
    assert res[0]["error"] == "EtcdUnavailable" and res[0]["message"].startswith(dead + ": "), res
    assert "UNAVAILABLE" in res[0]["message"], res


@pytest.mark.parametrize("etcd_cn, healthy", [("kube-apiserver-etcd-client", True), ("flanneld", False)])
def test_the_standin_apiserver_serves_with_its_etcd_user_and_reports_a_denial_as_an_error(etcd, etcd_cn, healthy):
    url, pki, procs, root = etcd
    bins = standins.write_all(root / ("bin-" + etcd_cn), names=("kube-apiserver",))
    etcd_cert, etcd_key = pki.issue("apiserver-as-" + etcd_cn, etcd_cn)
    cert, key = pki.issue("apiserver-" + etcd_cn, "kube-apiserver")
    admin = pki.issue("admin-" + etcd_cn, "admin", orgs=("system:masters",))
    port = testing.free_port()
    proc = procs.start([
        bins["kube-apiserver"], "--bind-address=127.0.0.1", "--secure-port=%d" % port, "--insecure-port=0",
        "--advertise-address=127.0.0.1", "--etcd-servers=" + url, "--etcd-cafile=" + pki.ca,
        "--etcd-certfile=" + etcd_cert, "--etcd-keyfile=" + etcd_key, "--tls-cert-file=" + cert,
        "--tls-private-key-file=" + key, "--client-ca-file=" + pki.ca, "--anonymous-auth=false",
        "--authorization-mode=RBAC", "--service-account-key-file=" + key,
        "--service-cluster-ip-range=198.19.202.0/24",
    ], "apiserver-" + etcd_cn)
    server = "https://127.0.0.1:%d" % port

    def get(path):
        return requests.get(server + path, cert=admin, verify=pki.ca, timeout=5)

    try:
        testing.wait_until(lambda: get("/healthz?verbose").status_code in (200, 500), 20,
                           what="apiserver answering (log: %s)" % proc.log_path)
        if healthy:
            testing.wait_until(lambda: get("/healthz").text == "ok", 20, what="apiserver healthy")
            r = get("/api/v1/namespaces/default")
            assert r.status_code == 200 and r.json()["metadata"]["name"] == "default", r.text
            return
        testing.wait_until(lambda: "permission denied" in procs.log(proc), 20, what="denial logged")
        r = get("/healthz?verbose")
        assert r.status_code == 500 and "[-]poststarthook/bootstrap-controller failed" in r.text, r.text
        r = get("/api/v1/namespaces/default")
        assert r.status_code == 500, r.text  # never a 404 from a read that etcd refused
        assert r.json()["reason"] == "InternalError" and "etcdserver: permission denied" in r.json()["message"]
    finally:
        procs.stop(proc)
