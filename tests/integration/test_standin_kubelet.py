"""Integration tests: the stand-in kubelet's docker client, CNI chain runner and pod lifecycle.

Without a dockerd on this machine, `FakeDocker` serves the Docker Engine API calls dockershim makes on a
unix socket; its "containers" are real processes (`unshare --net sleep`), so each sandbox has a real network
namespace. The kubelet, etcd and the apiserver run inside a network namespace created here, so the CNI
bridge/veths/iptables rules the real /usr/lib/cni plugins create never touch this machine's own network.
"""

import ctypes
import datetime
import http.server
import json
import os
import re
import shutil
import socket
import socketserver
import subprocess
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.fixtures import standins
from tests.fixtures.standins import _runtime as rt
from tests.fixtures.standins import testing

CNI_DIR = "/usr/lib/cni"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(not Path(CNI_DIR, "bridge").exists(), reason="needs containernetworking-plugins"),
]
wait_until = testing.wait_until
SUBNET = "198.19.250.0/28"
X509 = "Get https://registry.local:5000/v2/: x509: certificate signed by unknown authority"


# ------------------------------------------------------------------------------------------- fake docker


class FakeDocker:
    """Docker Engine API subset on a unix socket; containers are real processes in their own netns."""

    def __init__(self, path, cgroup_driver="cgroupfs", images=(), pull_errors=None):
        self.path, self.driver = str(path), cgroup_driver
        self.images, self.pull_errors = set(images), dict(pull_errors or {})
        self.containers, self.requests, self.lock = {}, [], threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def address_string(self):
                return "unix"

            def do_GET(self):
                fake.handle(self)

            do_POST = do_DELETE = do_GET

        self.server = socketserver.ThreadingUnixStreamServer(self.path, Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        for c in list(self.containers.values()):
            self._kill(c)
        os.unlink(self.path)

    @staticmethod
    def _kill(c):
        if c.get("proc") and c["proc"].poll() is None:
            c["proc"].kill()
            c["proc"].wait()

    def sandboxes(self):
        return [
            c
            for c in self.containers.values()
            if c["Labels"].get("io.kubernetes.docker.type") == "podsandbox"
        ]

    def _state(self, c):
        proc = c.get("proc")
        running = bool(proc) and proc.poll() is None
        if proc and not running and not c["finished"]:
            c["finished"] = rt.rfc3339()
        return {
            "Running": running,
            "Pid": proc.pid if running else 0,
            "ExitCode": proc.returncode if proc and not running else 0,
            "StartedAt": c["started"] or "0001-01-01T00:00:00Z",
            "FinishedAt": c["finished"] or "0001-01-01T00:00:00Z",
        }

    def handle(self, req):
        url = urlsplit(req.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(req.headers.get("Content-Length") or 0)
        body = json.loads(req.rfile.read(length)) if length else None
        path = re.sub(r"^/v[0-9.]+", "", url.path)
        with self.lock:
            self.requests.append((req.command, path, query, dict(req.headers), body))
            code, out = self.route(req.command, path, query, body, req.headers)
        data = out if isinstance(out, bytes) else (json.dumps(out).encode() if out is not None else b"")
        req.send_response(code)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        try:
            req.wfile.write(data)
        except BrokenPipeError:  # the kubelet was stopped mid-request
            pass

    def route(self, method, path, query, body, headers):
        if path == "/version":
            return 200, {"Version": "20.10.24+dfsg1", "ApiVersion": "1.41"}
        if path == "/info":
            return 200, {"CgroupDriver": self.driver}
        m = re.match(r"^/images/(.+)/json$", path)
        if m:
            ok = m.group(1) in self.images
            return (
                (200, {"Id": "sha256:" + "0" * 64})
                if ok
                else (404, {"message": "No such image: " + m.group(1)})
            )
        if path == "/images/create":
            ref = "%s:%s" % (query["fromImage"], query["tag"])
            if ref in self.pull_errors:
                return 500, {"message": self.pull_errors[ref]}
            self.images.add(ref)
            return 200, b'{"status":"Pulling from pause"}\r\n{"status":"Status: Downloaded newer image"}\r\n'
        if path == "/containers/create":
            if any(c["Name"] == query["name"] for c in self.containers.values()):
                return 409, {
                    "message": 'Conflict. The container name "/%s" is already in use' % query["name"]
                }
            cid = uuid.uuid4().hex + uuid.uuid4().hex
            self.containers[cid] = {
                "Id": cid, "Name": query["name"], "Labels": body.get("Labels") or {}, "Config": body,
                "HostConfig": body.get("HostConfig") or {}, "proc": None, "started": None, "finished": None,
            }  # fmt: skip
            return 201, {"Id": cid}
        if path == "/containers/json":
            want = json.loads(query.get("filters", "{}")).get("label", [])
            out = []
            for c in self.containers.values():
                if all(
                    w.split("=")[0] in c["Labels"]
                    and ("=" not in w or c["Labels"][w.split("=")[0]] == w.split("=", 1)[1])
                    for w in want
                ):
                    state = "running" if self._state(c)["Running"] else "exited"
                    out.append(
                        {"Id": c["Id"], "Names": ["/" + c["Name"]], "Labels": c["Labels"], "State": state}
                    )
            return 200, out
        m = re.match(r"^/containers/([0-9a-f]+)(/json|/start|/stop)?$", path)
        if not m or m.group(1) not in self.containers:
            return 404, {"message": "No such container: %s" % path}
        c = self.containers[m.group(1)]
        if m.group(2) == "/json":
            return 200, {"Id": c["Id"], "Name": "/" + c["Name"], "Image": "sha256:" + "1" * 64,
                         "State": self._state(c), "HostConfig": c["HostConfig"], "Config": c["Config"],
                         "NetworkSettings": {"IPAddress": ""}}  # fmt: skip
        if m.group(2) == "/start":
            mode = c["HostConfig"].get("NetworkMode", "")
            if mode.startswith("container:"):
                pid = self._state(self.containers[mode.split(":", 1)[1]])["Pid"]
                argv = ["nsenter", "--net=/proc/%d/ns/net" % pid, "sleep", "100000"]
            else:
                argv = ["unshare", "--net", "sleep", "100000"]
            c["proc"] = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
            c["started"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            return 204, None
        if m.group(2) == "/stop":
            if not self._state(c)["Running"]:
                return 304, None
            c["proc"].terminate()
            c["proc"].wait()
            return 204, None
        self._kill(c)
        del self.containers[c["Id"]]
        return 204, None


# ------------------------------------------------------------------------------------ network namespaces

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


class NetNs:
    """A named netns plus a worker thread inside it (sockets and children of that thread live there)."""

    def __init__(self, name):
        self.name = name
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        self.pool = ThreadPoolExecutor(1, initializer=self._enter)

    def _enter(self):
        with open("/var/run/netns/" + self.name) as fh:
            if _libc.setns(fh.fileno(), 0x40000000) != 0:  # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), "setns")

    def run(self, fn, *args):
        return self.pool.submit(fn, *args).result()

    def sh(self, *argv):
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True
        ).stdout

    def close(self):
        self.pool.shutdown()
        subprocess.run(["ip", "netns", "del", self.name], check=False)


@pytest.fixture
def node_ns():
    ns = NetNs("kl-node-%d" % os.getpid())
    try:
        yield ns
    finally:
        ns.close()


def _conflist(tmp, name="10-test.conflist"):
    conf = {
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "plugins": [
            {"type": "bridge", "bridge": "kcni0", "isGateway": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "subnet": SUBNET, "dataDir": str(tmp / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }  # fmt: skip
    (tmp / "net.d").mkdir(exist_ok=True)
    (tmp / "net.d" / name).write_text(json.dumps(conf))
    return conf


def _tcp_reachable(src_ns, dst_netns_pid, ip, port=7777):
    """A listener inside the sandbox's netns, connected to from src_ns."""
    target = NetNs.__new__(NetNs)
    target.pool = ThreadPoolExecutor(1, initializer=lambda: _setns_path("/proc/%d/ns/net" % dst_netns_pid))
    try:
        lsock = target.run(lambda: socket.create_server((ip, port)))
        try:
            with src_ns.run(lambda: socket.create_connection((ip, port), timeout=3)):
                return True
        finally:
            lsock.close()
    finally:
        target.pool.shutdown()


def _setns_path(path):
    with open(path) as fh:
        if _libc.setns(fh.fileno(), 0x40000000) != 0:
            raise OSError(ctypes.get_errno(), "setns")


# ------------------------------------------------------------------------------------------------- tests


def test_docker_client_speaks_the_engine_api_over_a_unix_socket(tmp_path):
    fake = FakeDocker(
        tmp_path / "d.sock", images={"reg.local:5000/pause:3.1"}, pull_errors={"reg.local:5000/bad:1": X509}
    )
    try:
        client = rt.DockerClient("unix://%s" % fake.path)
        assert client.version()["Version"] == "20.10.24+dfsg1"
        assert client.info()["CgroupDriver"] == "cgroupfs"
        assert client.image_present("reg.local:5000/pause:3.1") and not client.image_present("x/y:1")
        with pytest.raises(rt.DockerError) as exc:
            client.pull("reg.local:5000/bad:1")
        assert str(exc.value) == "Error response from daemon: " + X509
        (tmp_path / "cfg").mkdir()
        (tmp_path / "cfg" / "config.json").write_text(
            json.dumps({"auths": {"https://reg.local:5000": {"auth": "dTpw"}}})
        )
        auth = rt.docker_keyring_auth("reg.local:5000/app", [str(tmp_path / "nope"), str(tmp_path / "cfg")])
        client.pull("reg.local:5000/app@sha256:" + "a" * 64, auth)
        method, path, query, headers, _ = fake.requests[-1]
        assert (method, path, query["fromImage"], query["tag"]) == (
            "POST",
            "/images/create",
            "reg.local:5000/app",
            "sha256:" + "a" * 64,
        )
        import base64

        assert json.loads(base64.urlsafe_b64decode(headers["X-Registry-Auth"])) == {
            "username": "u",
            "password": "p",
            "serveraddress": "reg.local:5000",
        }
        cid = client.create("k8s_POD_x", {"Image": "i", "Labels": {"io.kubernetes.pod.uid": "u1"}})
        assert [c["Id"] for c in client.containers("io.kubernetes.pod.uid")] == [cid]
        assert client.containers("io.kubernetes.pod.uid=other") == []
        with pytest.raises(rt.DockerError) as exc:
            client.create("k8s_POD_x", {"Image": "i"})
        assert exc.value.status == 409 and "already in use" in str(exc.value)
        client.remove(cid)
        client.remove(cid)  # gone already: not an error
    finally:
        fake.close()
    with pytest.raises(rt.DockerError) as exc:
        rt.DockerClient("unix://%s" % fake.path).version()
    assert (
        str(exc.value)
        == "Cannot connect to the Docker daemon at unix://%s. Is the docker daemon running?" % fake.path
    )


def test_cni_config_is_the_first_loadable_file_in_sorted_order(tmp_path):
    with pytest.raises(rt.CniError, match="^No networks found in %s$" % (tmp_path / "missing")):
        rt.load_cni_network(str(tmp_path / "missing"))
    (tmp_path / "00-broken.conflist").write_text('{"name": "x", "plugins": []}')
    (tmp_path / "05-notype.conf").write_text('{"name": "y"}')
    (tmp_path / "20-list.conflist").write_text(
        '{"name": "z", "cniVersion": "0.3.1", "plugins": [{"type": "ptp"}]}'
    )
    (tmp_path / "10-single.conf").write_text('{"name": "s", "cniVersion": "0.3.1", "type": "bridge"}')
    (tmp_path / "README").write_text("ignored")
    net = rt.load_cni_network(str(tmp_path))
    assert net == {
        "name": "s",
        "cniVersion": "0.3.1",
        "plugins": [{"name": "s", "cniVersion": "0.3.1", "type": "bridge"}],
    }
    for p in ("10-single.conf", "20-list.conflist"):
        (tmp_path / p).unlink()
    with pytest.raises(rt.CniError, match="No valid networks found"):
        rt.load_cni_network(str(tmp_path))


def test_cni_chain_with_the_real_plugins_in_a_netns(tmp_path, node_ns):
    netlist = _conflist(tmp_path)
    netlist = rt.load_cni_network(str(tmp_path / "net.d"))
    pod = subprocess.Popen(["unshare", "--net", "sleep", "100000"])
    try:
        runner = rt.CniRunner([CNI_DIR])
        ctx = {"container_id": "c0ffee", "netns": "/proc/%d/ns/net" % pod.pid,
               "args": [("IgnoreUnknown", "1"), ("K8S_POD_NAMESPACE", "default"), ("K8S_POD_NAME", "p")]}  # fmt: skip
        caps = {"portMappings": [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]}
        # portmap receives bridge's result as prevResult and only its capability in runtimeConfig.
        assert (
            rt.CniRunner.plugin_config(netlist, netlist["plugins"][1], {"ips": []}, caps)["runtimeConfig"]
            == caps
        )
        assert "runtimeConfig" not in rt.CniRunner.plugin_config(netlist, netlist["plugins"][0], None, caps)
        node_ns.run(runner.add, rt.CNI_LOOPBACK, ctx, {})
        result = node_ns.run(runner.add, netlist, ctx, caps)
        ip = rt.cni_result_ip(result)
        assert ip.startswith("198.19.250.") and ip != "198.19.250.1"
        assert "kcni0" in node_ns.sh("ip", "-o", "link", "show", "type", "bridge")
        assert _tcp_reachable(node_ns, pod.pid, ip)
        assert "--dport 8081" in node_ns.sh("iptables", "-t", "nat", "-S")
        assert (tmp_path / "ipam" / "cbr0" / ip).exists()
        node_ns.run(runner.delete, netlist, ctx, caps)
        assert not (tmp_path / "ipam" / "cbr0" / ip).exists()
        assert "veth" not in node_ns.sh("ip", "-o", "link", "show")
        assert "--dport 8081" not in node_ns.sh("iptables", "-t", "nat", "-S")
        with pytest.raises(rt.CniError, match=r'^failed to find plugin "flannel" in path \[%s\]$' % CNI_DIR):
            node_ns.run(
                runner.add, {"name": "n", "cniVersion": "0.3.1", "plugins": [{"type": "flannel"}]}, ctx, {}
            )
        bad = {
            "name": "n",
            "cniVersion": "0.3.1",
            "plugins": [{"type": "bridge", "ipam": {"type": "host-local", "subnet": "nonsense"}}],
        }
        with pytest.raises(rt.CniError, match="nonsense"):
            node_ns.run(runner.add, bad, ctx, {})
    finally:
        pod.kill()
        pod.wait()


def test_kubelet_refuses_a_docker_with_another_cgroup_driver_or_none(tmp_path):
    kubelet = standins.write_all(tmp_path / "bin", names=("kubelet",))["kubelet"]
    fake = FakeDocker(tmp_path / "d.sock")
    common = [
        kubelet,
        "--fail-swap-on=false",
        "--healthz-port=0",
        "--pod-infra-container-image=reg.local:5000/pause:3.1",
    ]
    try:
        proc = subprocess.run([*common, "--docker-endpoint=unix://" + fake.path, "--cgroup-driver=systemd"],
                              capture_output=True, text=True, timeout=20)  # fmt: skip
    finally:
        fake.close()
    assert proc.returncode == 255, proc.stderr  # glog.Fatal
    assert re.search(
        r"^F\d{4} [\d:.]+ +\d+ server.go:233\] failed to run Kubelet: failed to create kubelet: misconfiguration: "
        r'kubelet cgroup driver: "systemd" is different from docker cgroup driver: "cgroupfs"$',
        proc.stderr,
        re.M,
    ), proc.stderr
    proc = subprocess.run(
        [*common, "--docker-endpoint=unix://" + fake.path], capture_output=True, text=True, timeout=20
    )
    assert proc.returncode == 255
    down = "Cannot connect to the Docker daemon at unix://%s. Is the docker daemon running?" % fake.path
    assert "Failed to execute Info() call to the Docker client: " + down in proc.stderr
    assert (
        "failed to create kubelet: rpc error: code = Unknown desc = failed to get docker version: " + down
        in proc.stderr
    )


# ----------------------------------------------------------------- the kubelet against etcd + apiserver


class NsProcesses(testing.Processes):
    """Processes started inside a network namespace (`ip netns exec` keeps the PID)."""

    def __init__(self, log_dir, ns):
        super().__init__(log_dir)
        self.ns = ns

    def start(self, argv, name, env=None):
        return super().start(["ip", "netns", "exec", self.ns, *argv], name, env)


@pytest.fixture
def stack(tmp_path, node_ns):
    """etcd + apiserver in node_ns, an API helper for the test, a kubelet launcher with its own fake docker."""
    procs, pki = NsProcesses(tmp_path / "logs", node_ns.name), testing.Pki(tmp_path / "pki")
    bins = standins.write_all(tmp_path / "bin", names=("kube-apiserver", "kubelet"))
    fakes = []
    try:
        _, etcd_url = testing.start_etcd(procs, pki, str(tmp_path / "etcd"))
        cert, key = pki.issue("apiserver", "kube-apiserver")
        etcd_cert, etcd_key = pki.issue("etcd-client", "etcd-client")
        procs.start([bins["kube-apiserver"], "--bind-address=127.0.0.1", "--secure-port=6443", "--insecure-port=0",
                     "--advertise-address=127.0.0.1", "--etcd-servers=" + etcd_url, "--etcd-cafile=" + pki.ca,
                     "--etcd-certfile=" + etcd_cert, "--etcd-keyfile=" + etcd_key, "--tls-cert-file=" + cert,
                     "--tls-private-key-file=" + key, "--client-ca-file=" + pki.ca, "--anonymous-auth=false",
                     "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
                     "--service-account-key-file=" + key, "--service-cluster-ip-range=198.19.251.0/24"], "apiserver")  # fmt: skip
        admin = pki.issue("admin", "admin", orgs=("system:masters",))
        session = requests.Session()
        session.trust_env = False

        def api(method, path, body=None):
            def call():
                return session.request(
                    method, "https://127.0.0.1:6443" + path, json=body, cert=admin, verify=pki.ca, timeout=5
                )

            return node_ns.run(call)

        wait_until(lambda: api("GET", "/healthz").text == "ok", 20, what="apiserver healthy")

        def kubelet(node, *extra, images=("reg.local:5000/pause:3.1",), pull_errors=None, name="kubelet"):
            if not fakes or fakes[-1][0] != node:
                fakes.append(
                    (node, FakeDocker(tmp_path / (node + ".sock"), images=images, pull_errors=pull_errors))
                )
            c, k = pki.issue(node, "system:node:" + node, orgs=("system:nodes",))
            kubeconfig = testing.write_kubeconfig(
                tmp_path / (node + ".kubeconfig"), "https://127.0.0.1:6443", pki.ca, c, k
            )
            argv = [bins["kubelet"], "--kubeconfig=" + kubeconfig, "--hostname-override=" + node, "--node-ip=198.18.250.9",
                    "--healthz-port=0", "--fail-swap-on=false", "--node-status-update-frequency=1s",
                    "--docker-endpoint=unix://" + fakes[-1][1].path, "--network-plugin=cni",
                    "--cni-conf-dir=%s" % (tmp_path / "net.d"), "--cni-bin-dir=" + CNI_DIR,
                    "--root-dir=%s" % (tmp_path / "kubelet"), "--pod-infra-container-image=reg.local:5000/pause:3.1", *extra]  # fmt: skip
            return procs.start(argv, name), fakes[-1][1]

        yield {"api": api, "kubelet": kubelet, "procs": procs, "ns": node_ns, "tmp": tmp_path}
    finally:
        procs.stop_all()
        for _, fake in fakes:
            fake.close()


def _pod(name, node, ports=()):
    container = {"name": "app", "image": "reg.local:5000/pause:3.1", "ports": list(ports)}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [container]}}  # fmt: skip


def _ready(api, node):
    conds = api("GET", "/api/v1/nodes/" + node).json()["status"]["conditions"]
    return [c for c in conds if c["type"] == "Ready"][0]


def test_kubelet_runs_adopts_and_removes_pods(stack):
    api, ns, tmp = stack["api"], stack["ns"], stack["tmp"]
    proc, fake = stack["kubelet"]("n1")
    wait_until(lambda: api("GET", "/api/v1/nodes/n1").ok, 15, what="node n1 registered")
    ready = _ready(api, "n1")
    assert (ready["status"], ready["reason"]) == ("False", "KubeletNotReady")
    assert ready["message"] == ("runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
                                "message:docker: network plugin is not ready: cni config uninitialized")  # fmt: skip
    node = api("GET", "/api/v1/nodes/n1").json()
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"] == "docker://20.10.24+dfsg1"
    assert "Unable to update cni config: No networks found in %s" % (tmp / "net.d") in testing.Processes.log(
        proc
    )

    assert (
        api(
            "POST",
            "/api/v1/namespaces/default/pods",
            _pod("web", "n1", [{"containerPort": 80, "hostPort": 8082}]),
        ).status_code
        == 201
    )
    pending = wait_until(
        lambda: api("GET", "/api/v1/namespaces/default/pods/web").json()["status"].get("reason"),
        10,
        what="web pending",
    )
    assert pending == "NetworkNotReady" and not fake.sandboxes()

    _conflist(tmp)
    wait_until(lambda: _ready(api, "n1")["status"] == "True", 15, what="node Ready once a CNI config exists")
    pod = wait_until(lambda: (lambda p: p["status"].get("phase") == "Running" and p)(
        api("GET", "/api/v1/namespaces/default/pods/web").json()), 20, what="web Running")  # fmt: skip
    status, uid = pod["status"], pod["metadata"]["uid"]
    assert status["hostIP"] == "198.18.250.9" and status["podIP"].startswith("198.19.250.")
    assert [c["type"] for c in status["conditions"] if c["status"] == "True"] == [
        "Initialized",
        "Ready",
        "PodScheduled",
    ]
    assert status["containerStatuses"][0]["state"]["running"]["startedAt"]
    [sandbox] = fake.sandboxes()
    assert sandbox["Name"] == "k8s_POD_web_default_%s_0" % uid
    assert (
        sandbox["HostConfig"]["NetworkMode"] == "none"
        and sandbox["Config"]["Image"] == "reg.local:5000/pause:3.1"
    )
    assert {k: sandbox["Labels"][k] for k in ("io.kubernetes.pod.name", "io.kubernetes.pod.namespace", "io.kubernetes.pod.uid",
            "io.kubernetes.docker.type")} == {"io.kubernetes.pod.name": "web", "io.kubernetes.pod.namespace": "default",
            "io.kubernetes.pod.uid": uid, "io.kubernetes.docker.type": "podsandbox"}  # fmt: skip
    [app] = [
        c for c in fake.containers.values() if c["Labels"].get("io.kubernetes.docker.type") == "container"
    ]
    assert app["HostConfig"]["NetworkMode"] == "container:" + sandbox["Id"]
    pid = sandbox["proc"].pid
    assert _tcp_reachable(ns, pid, status["podIP"])
    assert "--dport 8082" in ns.sh("iptables", "-t", "nat", "-S")
    checkpoint = json.loads((tmp / "dockershim" / "sandbox" / sandbox["Id"]).read_text())
    assert checkpoint["data"]["port_mappings"] == [
        {"protocol": "TCP", "container_port": 80, "host_port": 8082}
    ]

    # A restarted kubelet adopts the running sandbox; a pod deleted meanwhile is torn down on start.
    assert stack["procs"].stop(proc) == 0
    assert (
        api("POST", "/api/v1/namespaces/default/pods", _pod("other", "n2")).status_code == 201
    )  # not this node's
    proc, _ = stack["kubelet"]("n1", name="kubelet-again")
    wait_until(lambda: "Successfully registered node n1" in testing.Processes.log(proc)
               or "previously registered" in testing.Processes.log(proc), 15, what="kubelet restarted")  # fmt: skip
    import time

    time.sleep(3 * rt.POD_SYNC_PERIOD)
    assert [s["Id"] for s in fake.sandboxes()] == [sandbox["Id"]] and sandbox["proc"].poll() is None
    assert api("GET", "/api/v1/namespaces/default/pods/web").json()["status"]["podIP"] == status["podIP"]
    assert stack["procs"].stop(proc) == 0
    assert api("DELETE", "/api/v1/namespaces/default/pods/web").ok
    proc, _ = stack["kubelet"]("n1", name="kubelet-third")
    wait_until(lambda: not fake.sandboxes(), 20, what="the deleted pod's sandbox removed")
    assert not fake.containers and sandbox["proc"].poll() is not None
    assert "veth" not in ns.sh("ip", "-o", "link", "show")
    assert "--dport 8082" not in ns.sh("iptables", "-t", "nat", "-S")
    assert not (tmp / "ipam" / "cbr0" / status["podIP"]).exists()
    assert not (tmp / "dockershim" / "sandbox" / sandbox["Id"]).exists()


def test_a_failed_sandbox_pull_is_reported_in_the_pod_status(stack):
    api, tmp = stack["api"], stack["tmp"]
    _conflist(tmp)
    proc, fake = stack["kubelet"]("n3", "--pod-infra-container-image=reg.local:5000/broken:3.1",
                                  images=(), pull_errors={"reg.local:5000/broken:3.1": X509})  # fmt: skip
    wait_until(lambda: api("GET", "/api/v1/nodes/n3").ok, 15, what="node n3 registered")
    assert api("POST", "/api/v1/namespaces/default/pods", _pod("p3", "n3")).status_code == 201
    status = wait_until(lambda: (lambda s: s.get("message") and s)(
        api("GET", "/api/v1/namespaces/default/pods/p3").json()["status"]), 15, what="p3 failure reported")  # fmt: skip
    assert status["phase"] == "Pending" and status["reason"] == "FailedCreatePodSandBox"
    assert status["message"] == ('Failed create pod sandbox: rpc error: code = Unknown desc = failed pulling image '
                                 '"reg.local:5000/broken:3.1": Error response from daemon: ' + X509)  # fmt: skip
    assert not fake.containers


@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare is needed")
def test_kubelet_refuses_to_run_with_swap_on(tmp_path):
    """With --fail-swap-on (the rendered default) and a swap device listed in /proc/swaps, kubelet 1.10 refuses to
    start with its real message. The machine has no swap: a private mount namespace shows it a /proc/swaps with
    one (unshare -m; the bind mount ends with that process)."""
    kubelet = standins.write_all(tmp_path / "bin", names=("kubelet",))["kubelet"]
    swaps = tmp_path / "swaps"
    swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n/dev/sda2\tpartition\t2097148\t0\t-2\n")
    script = f"mount --bind {swaps} /proc/swaps && exec {kubelet} --fail-swap-on=true --healthz-port=0 " \
             "--pod-infra-container-image=reg.local:5000/pause:3.1"
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 255, proc.stderr
    assert re.search(r"^F\d{4} [\d:.]+ +\d+ server.go:233\] failed to run Kubelet: Running with swap on is not "
                     r"supported, please disable swap! or set --fail-swap-on flag to false\. /proc/swaps contained: "
                     r"\[/dev/sda2\tpartition\t2097148\t0\t-2\]$", proc.stderr, re.M), proc.stderr
