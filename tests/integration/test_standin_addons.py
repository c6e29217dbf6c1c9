"""Integration tests: `kubectl apply -f <addons dir>` of the rendered addon manifests with the stand-in kubectl
against the stand-in kube-apiserver on a real etcd 3.4; pods, their status subresource and cross-namespace lists."""

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from installer import addons, inventory
from tests.fixtures import standins
from tests.fixtures.standins import testing

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/usr/bin/etcd").exists(), reason="needs /usr/bin/etcd"),
]

ROOT = Path(__file__).resolve().parents[2]
SERVICE_CIDR = "198.19.200.128/26"  # test address space only; cluster.dns_ip is its 10th address
IMAGES = {r: f"registry.local:5000/kubernetes/{r}:x" for r in
          ("kube-dns", "dnsmasq", "dns-sidecar", "coredns", "dashboard", "heapster", "metrics-server", "pause")}
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("standin-addons")
    procs = testing.Processes(root / "logs")
    pki = testing.Pki(root / "pki")
    try:
        _, etcd_url = testing.start_etcd(procs, pki, str(root / "etcd"), "etcd-addons")
        probe = pki.issue("etcd-probe", "probe")
        testing.wait_until(lambda: requests.get(etcd_url + "/health", verify=pki.ca, cert=probe, timeout=2).ok,
                           15, what="etcd healthy")
        bins = standins.write_all(root / "bin")
        apiserver, server = start_apiserver(procs, pki, bins, etcd_url, "apiserver")
        admin = pki.issue("admin", "admin", orgs=("system:masters",))
        wait_bootstrapped(apiserver, server, pki, admin)
        kubeconfig = testing.write_kubeconfig(root / "admin.kubeconfig", server, pki.ca, *admin, user="admin",
                                              embed=True)
        yield {"root": root, "bin": bins, "pki": pki, "procs": procs, "server": server, "admin": admin,
               "kubeconfig": kubeconfig, "apiserver": apiserver, "etcd": etcd_url, "etcd_client": probe}
    finally:
        procs.stop_all()


def start_apiserver(procs, pki, bins, etcd_url, name):
    etcd_cert, etcd_key = pki.issue(name + "-etcd-client", "kube-apiserver-etcd-client")
    cert, key = pki.issue(name, "kube-apiserver")
    port = testing.free_port()
    proc = procs.start([
        bins["kube-apiserver"], "--bind-address=127.0.0.1", "--secure-port=%d" % port, "--insecure-port=0",
        "--advertise-address=127.0.0.1", "--etcd-servers=" + etcd_url, "--etcd-cafile=" + pki.ca,
        "--etcd-certfile=" + etcd_cert, "--etcd-keyfile=" + etcd_key, "--tls-cert-file=" + cert,
        "--tls-private-key-file=" + key, "--client-ca-file=" + pki.ca, "--anonymous-auth=false",
        "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
        "--service-account-key-file=" + key, "--service-cluster-ip-range=" + SERVICE_CIDR,
    ], name)
    return proc, "https://127.0.0.1:%d" % port


def wait_bootstrapped(proc, server, pki, admin):
    """Ready once the bootstrap controller created the system namespaces."""
    try:
        testing.wait_until(lambda: requests.get(server + "/api/v1/namespaces/kube-system", verify=pki.ca,
                                                cert=admin, timeout=2).ok, 15, what="apiserver bootstrapped")
    except AssertionError:
        pytest.fail("apiserver did not come up:\n" + testing.Processes.log(proc))


def kubectl(env, *args, kubeconfig=None):
    return subprocess.run([env["bin"]["kubectl"], "--kubeconfig", kubeconfig or env["kubeconfig"], *args],
                          capture_output=True, text=True, timeout=60, check=False)


def api(env, method, path, body=None, cert=None, content_type="application/json"):
    return requests.request(method, env["server"] + path, verify=env["pki"].ca, cert=cert or env["admin"],
                            timeout=10, data=None if body is None else json.dumps(body),
                            headers={"Content-Type": content_type})


def etcd_value(env, key):
    resp = requests.post(env["etcd"] + "/v3/kv/range", json={"key": base64.b64encode(key.encode()).decode()},
                         verify=env["pki"].ca, cert=env["etcd_client"], timeout=5)
    kvs = resp.json().get("kvs") or []
    return json.loads(base64.b64decode(kvs[0]["value"])) if kvs else None


def render_addons(dest, dns_addon):
    inv = inventory.load(ROOT / "inventory.example.yaml")
    inv = inv.model_copy(update={"cluster": inv.cluster.model_copy(
        update={"dns_addon": dns_addon, "service_cidr": SERVICE_CIDR})})
    dest.mkdir(parents=True, exist_ok=True)
    for name, text in addons.render(ROOT / "manifests", inv, IMAGES).items():
        (dest / name).write_text(text)
    return dest


def manifest_objects(directory):
    for path in sorted(directory.iterdir()):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def resource_path(obj):
    """REST path of a manifest object (the resource names kubectl would find by discovery)."""
    plural = {"ServiceAccount": "serviceaccounts", "ConfigMap": "configmaps", "Secret": "secrets",
              "Service": "services", "Deployment": "deployments", "ClusterRole": "clusterroles",
              "ClusterRoleBinding": "clusterrolebindings", "Role": "roles", "RoleBinding": "rolebindings",
              "APIService": "apiservices"}[obj["kind"]]
    root = "/api/v1" if obj["apiVersion"] == "v1" else "/apis/" + obj["apiVersion"]
    ns = obj["metadata"].get("namespace")
    return "%s%s/%s/%s" % (root, "/namespaces/" + ns if ns else "", plural, obj["metadata"]["name"])


def expected_line(obj, verb):
    group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
    return '%s%s "%s" %s' % (obj["kind"].lower(), "." + group if group else "", obj["metadata"]["name"], verb)


def assert_subset(expected, actual, where):
    """Every field of the manifest is stored as written (the server may add defaults beside them)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        for key, value in expected.items():
            assert key in actual, "%s.%s missing" % (where, key)
            assert_subset(value, actual[key], "%s.%s" % (where, key))
    else:
        assert expected == actual, where


@pytest.mark.parametrize("dns_addon", ["kube-dns", "coredns"])
def test_apply_rendered_addons_creates_then_leaves_unchanged_then_configures(env, dns_addon, tmp_path):
    addons_dir = render_addons(tmp_path / "addons", dns_addon)
    objects = list(manifest_objects(addons_dir))
    assert len(objects) >= 15

    first = kubectl(env, "apply", "-f", str(addons_dir) + "/")
    assert first.returncode == 0, first.stderr
    created = [expected_line(o, "created") for _, o in objects]
    if dns_addon == "coredns":  # the kube-dns run (same module) already made the objects both DNS files share
        shared = {"dashboard.yaml", "metrics-server.yaml"}
        created = [expected_line(o, "created" if p.name not in shared else "unchanged") for p, o in objects]
        kube_dns_svc = [ln for ln in first.stdout.splitlines() if ln.startswith('service "kube-dns"')]
        assert kube_dns_svc == ['service "kube-dns" configured']  # labels differ between the two DNS addons
        created = [ln if not ln.startswith('service "kube-dns"') else kube_dns_svc[0] for ln in created]
    assert first.stdout.splitlines() == created

    for path, obj in objects:
        resp = api(env, "GET", resource_path(obj))
        assert resp.status_code == 200, (path.name, resp.text)
        live = resp.json()
        assert_subset(obj.get("spec", {}), live.get("spec", {}), "%s %s spec" % (obj["kind"], live["metadata"]["name"]))
        for field in ("data", "rules", "roleRef", "subjects"):
            if field in obj:
                assert live[field] == obj[field], field
        meta = live["metadata"]
        assert meta["uid"] and meta["creationTimestamp"] and int(meta["resourceVersion"]) > 0
        assert json.loads(meta["annotations"][LAST_APPLIED])["metadata"]["name"] == obj["metadata"]["name"]
        for key, value in (obj["metadata"].get("labels") or {}).items():
            assert meta["labels"][key] == value
        if obj["kind"] == "Deployment":
            assert meta["generation"] >= 1 and live["spec"]["selector"]["matchLabels"]
    # Stored in etcd under the real apiserver's key layout.
    ns = "kube-system"
    dns_deploy = "kube-dns" if dns_addon == "kube-dns" else "coredns"
    assert etcd_value(env, "/registry/deployments/%s/%s" % (ns, dns_deploy))["kind"] == "Deployment"
    assert etcd_value(env, "/registry/serviceaccounts/%s/metrics-server" % ns)["kind"] == "ServiceAccount"
    assert etcd_value(env, "/registry/services/specs/%s/kube-dns" % ns)["spec"]["clusterIP"] == "198.19.200.138"
    assert etcd_value(env, "/registry/clusterrolebindings/metrics-server:system:auth-delegator")
    assert etcd_value(env, "/registry/apiregistration.k8s.io/apiservices/v1beta1.metrics.k8s.io")
    # The services that name no clusterIP got one from --service-cluster-ip-range.
    dashboard = api(env, "GET", "/api/v1/namespaces/kube-system/services/kubernetes-dashboard").json()
    assert dashboard["spec"]["clusterIP"].startswith("198.19.200.") and dashboard["spec"]["type"] == "ClusterIP"

    again = kubectl(env, "apply", "-f", str(addons_dir))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [expected_line(o, "unchanged") for _, o in objects]

    # A changed manifest: only that object is configured, and the change (incl. a removed field) is live.
    dash = addons_dir / "dashboard.yaml"
    dash_path = "/apis/apps/v1beta2/namespaces/kube-system/deployments/kubernetes-dashboard"
    generation = api(env, "GET", dash_path).json()["metadata"]["generation"]
    text = dash.read_text()
    assert "replicas: 1\n" in text and "revisionHistoryLimit: 10\n" in text
    dash.write_text(text.replace("replicas: 1\n", "replicas: 3\n").replace("  revisionHistoryLimit: 10\n", ""))
    third = kubectl(env, "apply", "-f", str(addons_dir))
    assert third.returncode == 0, third.stderr
    changed = [ln for ln in third.stdout.splitlines() if not ln.endswith(" unchanged")]
    assert changed == ['deployment.apps "kubernetes-dashboard" configured']
    live = api(env, "GET", dash_path).json()
    assert live["spec"]["replicas"] == 3 and live["metadata"]["generation"] == generation + 1
    assert live["spec"]["revisionHistoryLimit"] == 10  # dropped from the file: back to the apps/v1beta2 default
    dash.write_text(text)
    assert kubectl(env, "apply", "-f", str(addons_dir)).returncode == 0


def test_kubectl_get_and_delete_the_new_resources(env, tmp_path):
    addons_dir = render_addons(tmp_path / "addons", "kube-dns")
    assert kubectl(env, "apply", "-f", str(addons_dir)).returncode == 0
    names = kubectl(env, "get", "deploy", "-n", "kube-system", "-o", "name")
    assert names.returncode == 0, names.stderr
    assert "deployment.extensions/kube-dns" in names.stdout.splitlines()
    as_json = json.loads(kubectl(env, "get", "deployments.apps", "kube-dns", "-n", "kube-system", "-o", "json").stdout)
    assert as_json["apiVersion"] == "apps/v1" and as_json["spec"]["template"]["spec"]["serviceAccountName"] == "kube-dns"
    as_yaml = yaml.safe_load(kubectl(env, "get", "sa", "kube-dns", "-n", "kube-system", "-o", "yaml").stdout)
    assert as_yaml["kind"] == "ServiceAccount" and as_yaml["metadata"]["namespace"] == "kube-system"
    table = kubectl(env, "get", "svc", "-n", "kube-system").stdout.splitlines()
    assert table[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert any(row.split()[:3] == ["kube-dns", "ClusterIP", "198.19.200.138"] for row in table[1:])
    crb = kubectl(env, "get", "clusterrolebinding", "metrics-server:system:auth-delegator", "-o", "name")
    assert crb.stdout.strip() == "clusterrolebinding.rbac.authorization.k8s.io/metrics-server:system:auth-delegator"
    labelled = kubectl(env, "get", "deploy", "-n", "kube-system", "-l", "k8s-app=metrics-server", "-o", "name")
    assert labelled.stdout.splitlines() == ["deployment.extensions/metrics-server"]

    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(addons_dir / "metrics-server.yaml", one)
    deleted = kubectl(env, "delete", "-f", str(one))
    assert deleted.returncode == 0, deleted.stderr
    assert 'apiservice.apiregistration.k8s.io "v1beta1.metrics.k8s.io" deleted' in deleted.stdout.splitlines()
    assert api(env, "GET", "/apis/apps/v1/namespaces/kube-system/deployments/heapster").status_code == 404
    missing = kubectl(env, "delete", "-f", str(one))
    assert missing.returncode == 1
    assert ('Error from server (NotFound): error when deleting "%s": deployments.extensions "heapster" not found'
            % (one / "metrics-server.yaml")) in missing.stderr.splitlines()


def test_apply_reports_unknown_kinds_and_failing_objects_and_continues(env, tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: in-missing-ns, namespace: nowhere}\n---\n"
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"
    )
    (d / "b.json").write_text(json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                          "metadata": {"name": "fine", "namespace": "default"},
                                          "data": {"k": "v"}}))
    (d / "c.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: nosel, namespace: default}\n"
                              "spec:\n  template:\n    metadata: {labels: {a: b}}\n"
                              "    spec: {containers: [{name: c, image: i}]}\n")
    (d / "ignored.txt").write_text("not a manifest")
    (d / "sub").mkdir()
    (d / "sub" / "skipped.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: only-with-r}\n")
    empty = kubectl(env, "apply", "-f", str(tmp_path))  # only a subdirectory, no -R
    assert (empty.returncode, empty.stderr) == (1, "error: no objects passed to apply\n")
    res = kubectl(env, "apply", "-f", str(d))
    assert res.returncode == 1
    assert res.stdout.splitlines() == ['configmap "fine" created']
    errors = res.stderr.splitlines()
    assert 'error: unable to recognize "%s": no matches for kind "Widget" in version "example.com/v1"' % (
        d / "a.yaml") in errors
    assert ('Error from server (NotFound): error when creating "%s": namespaces "nowhere" not found' % (d / "a.yaml")
            in errors)
    assert ('Error from server (Invalid): error when creating "%s": Deployment.apps "nosel" is invalid: '
            "spec.selector: Required value" % (d / "c.yaml")) in errors
    assert api(env, "GET", "/api/v1/namespaces/default/configmaps/fine").json()["data"] == {"k": "v"}
    assert api(env, "GET", "/api/v1/namespaces/default/configmaps/only-with-r").status_code == 404
    recursive = kubectl(env, "apply", "-R", "-f", str(d))
    assert recursive.stdout.splitlines() == ['configmap "fine" unchanged', 'configmap "only-with-r" created']


def test_apiserver_errors_are_status_objects(env):
    body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "dup", "namespace": "default"}}
    assert api(env, "POST", "/api/v1/namespaces/default/serviceaccounts", body).status_code == 201
    again = api(env, "POST", "/api/v1/namespaces/default/serviceaccounts", body)
    assert again.status_code == 409
    assert again.json()["message"] == 'serviceaccounts "dup" already exists'
    assert again.json()["reason"] == "AlreadyExists" and again.json()["kind"] == "Status"
    missing = api(env, "GET", "/apis/extensions/v1beta1/namespaces/default/deployments/nope").json()
    assert (missing["code"], missing["reason"], missing["details"]) == (
        404, "NotFound", {"name": "nope", "group": "extensions", "kind": "deployments"})
    assert missing["message"] == 'deployments.extensions "nope" not found'
    bad = api(env, "POST", "/api/v1/namespaces/default/services",
              {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "Bad_Name"}, "spec": {"ports": [{"port": 1}]}})
    assert bad.status_code == 422 and bad.json()["details"]["causes"][0]["field"] == "metadata.name"
    taken = api(env, "POST", "/api/v1/namespaces/default/services",
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "out"},
                 "spec": {"clusterIP": "198.18.0.1", "ports": [{"port": 1}]}})
    assert taken.status_code == 422 and "provided IP is not in the valid range" in taken.json()["message"]
    # Merge and strategic-merge patches; an unknown patch type is refused.
    patched = api(env, "PATCH", "/api/v1/namespaces/default/serviceaccounts/dup",
                  {"metadata": {"labels": {"a": "1"}}}, content_type="application/merge-patch+json")
    assert patched.status_code == 200 and patched.json()["metadata"]["labels"] == {"a": "1"}
    patched = api(env, "PATCH", "/api/v1/namespaces/default/serviceaccounts/dup",
                  {"metadata": {"labels": {"a": None, "b": "2"}}},
                  content_type="application/strategic-merge-patch+json")
    assert patched.json()["metadata"]["labels"] == {"b": "2"}
    assert api(env, "PATCH", "/api/v1/namespaces/default/serviceaccounts/dup", {},
               content_type="text/plain").status_code == 415
    # Discovery as a 1.10 apiserver serves it.
    groups = {g["name"]: [v["version"] for v in g["versions"]] for g in api(env, "GET", "/apis").json()["groups"]}
    assert groups["apps"] == ["v1", "v1beta2", "v1beta1"] and groups["extensions"] == ["v1beta1"]
    assert groups["rbac.authorization.k8s.io"] == ["v1", "v1beta1"] and "v1beta1" in groups["apiregistration.k8s.io"]
    apps = {r["name"]: r for r in api(env, "GET", "/apis/apps/v1beta2").json()["resources"]}
    assert apps["deployments"]["namespaced"] and apps["deployments"]["kind"] == "Deployment"
    assert "patch" in apps["deployments"]["verbs"]
    core = {r["name"]: r for r in api(env, "GET", "/api/v1").json()["resources"]}
    assert core["pods/status"]["verbs"] == ["get", "patch", "update"] and core["serviceaccounts"]["shortNames"] == ["sa"]


def test_pods_status_subresource_and_cross_namespace_list(env):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "kube-system"},
           "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "registry.local:5000/x:1"}]}}
    made = api(env, "POST", "/api/v1/namespaces/kube-system/pods", pod)
    assert made.status_code == 201 and made.json()["status"] == {"phase": "Pending"}
    other = dict(pod, metadata={"name": "p2", "namespace": "default"}, spec=dict(pod["spec"], nodeName="node-b"))
    assert api(env, "POST", "/api/v1/namespaces/default/pods", other).status_code == 201
    listed = api(env, "GET", "/api/v1/pods").json()
    assert listed["kind"] == "PodList"
    assert {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in listed["items"]} >= {
        ("kube-system", "p1"), ("default", "p2")}
    on_a = api(env, "GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a").json()["items"]
    assert [p["metadata"]["name"] for p in on_a] == ["p1"]

    # The kubelet of node-a (Node authorizer) writes the status via the subresource.
    kubelet = env["pki"].issue("kubelet-node-a", "system:node:node-a", orgs=("system:nodes",))
    assert api(env, "GET", "/api/v1/pods", cert=kubelet).status_code == 200
    live = api(env, "GET", "/api/v1/namespaces/kube-system/pods/p1", cert=kubelet).json()
    live["status"] = {"phase": "Running", "podIP": "198.19.7.5"}
    live["spec"]["nodeName"] = "elsewhere"  # ignored: the status subresource writes status only
    put = api(env, "PUT", "/api/v1/namespaces/kube-system/pods/p1/status", live, cert=kubelet)
    assert put.status_code == 200, put.text
    stored = api(env, "GET", "/api/v1/namespaces/kube-system/pods/p1").json()
    assert stored["status"] == {"phase": "Running", "podIP": "198.19.7.5"} and stored["spec"]["nodeName"] == "node-a"
    # A plain PUT does not touch status; a stale resourceVersion conflicts.
    stored["status"] = {"phase": "Failed"}
    assert api(env, "PUT", "/api/v1/namespaces/kube-system/pods/p1", stored).json()["status"]["phase"] == "Running"
    assert api(env, "PUT", "/api/v1/namespaces/kube-system/pods/p1", stored).status_code == 409
    nobody = env["pki"].issue("nobody", "nobody")
    assert api(env, "GET", "/api/v1/pods", cert=nobody).status_code == 403
    pods = kubectl(env, "get", "pods", "--all-namespaces")
    assert pods.stdout.splitlines()[0].split()[:4] == ["NAMESPACE", "NAME", "READY", "STATUS"]
    for ns, name in (("kube-system", "p1"), ("default", "p2")):
        assert api(env, "DELETE", "/api/v1/namespaces/%s/pods/%s" % (ns, name)).status_code == 200


def test_kubectl_apply_with_the_apiserver_down(env, tmp_path):
    addons_dir = render_addons(tmp_path / "addons", "kube-dns")
    proc, server = start_apiserver(env["procs"], env["pki"], env["bin"], env["etcd"], "apiserver-stopped")
    wait_bootstrapped(proc, server, env["pki"], env["admin"])
    kc = testing.write_kubeconfig(tmp_path / "second.kubeconfig", server, env["pki"].ca, *env["admin"], user="admin")
    up = kubectl(env, "apply", "-f", str(addons_dir), kubeconfig=kc)
    assert up.returncode == 0, up.stderr
    assert env["procs"].stop(proc) == 0
    res = kubectl(env, "apply", "-f", str(addons_dir), kubeconfig=kc)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.strip() == ("The connection to the server %s was refused - did you specify the right host "
                                  "or port?" % server[len("https://"):])
