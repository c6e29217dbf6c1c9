"""Integration tests: the stand-in executables against a real etcd 3.4 on 127.0.0.1."""

import json
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.fixtures import standins
from tests.fixtures.standins import testing

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/usr/bin/etcd").exists(), reason="needs /usr/bin/etcd"),
]

free_port, wait_until = testing.free_port, testing.wait_until


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Stand-in binaries, a PKI and a process registry that stops every started PID at teardown."""
    root = tmp_path_factory.mktemp("standins")
    procs = testing.Processes(root / "logs")
    try:
        yield {
            "root": root,
            "bin": standins.write_all(root / "bin"),
            "pki": testing.Pki(root / "pki"),
            "procs": procs,
        }
    finally:
        procs.stop_all()


def _start_etcd(env, name):
    proc, url = testing.start_etcd(env["procs"], env["pki"], str(env["root"] / name), name)
    cert, key = env["pki"].issue(name + "-probe", "probe")
    wait_until(
        lambda: requests.get(url + "/health", verify=env["pki"].ca, cert=(cert, key), timeout=2).ok,
        15,
        what="etcd %s healthy" % name,
    )
    return proc, url


def _start_apiserver(env, etcd_url, name):
    pki = env["pki"]
    etcd_cert, etcd_key = pki.issue(name + "-etcd-client", "kube-apiserver-etcd-client")
    cert, key = pki.issue(name, "kube-apiserver")
    port = free_port()
    proc = env["procs"].start(
        [
            env["bin"]["kube-apiserver"],
            "--bind-address=127.0.0.1",
            "--secure-port=%d" % port,
            "--insecure-port=0",
            "--advertise-address=127.0.0.1",
            "--etcd-servers=" + etcd_url,
            "--etcd-cafile=" + pki.ca,
            "--etcd-certfile=" + etcd_cert,
            "--etcd-keyfile=" + etcd_key,
            "--tls-cert-file=" + cert,
            "--tls-private-key-file=" + key,
            "--client-ca-file=" + pki.ca,
            "--anonymous-auth=false",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction,NamespaceLifecycle",
            "--service-account-key-file=" + key,
            "--service-cluster-ip-range=198.19.201.0/24",
        ],
        name,
    )
    return proc, "https://127.0.0.1:%d" % port


@pytest.fixture(scope="module")
def cluster(env):
    """etcd + kube-apiserver shared by the tests that do not break them."""
    _, etcd_url = _start_etcd(env, "etcd-main")
    proc, server = _start_apiserver(env, etcd_url, "apiserver-main")
    admin = env["pki"].issue("admin", "admin", orgs=("system:masters",))
    try:
        wait_until(
            lambda: (
                requests.get(server + "/healthz", verify=env["pki"].ca, cert=admin, timeout=2).text == "ok"
            ),
            15,
            what="apiserver healthz",
        )
    except AssertionError:
        pytest.fail("apiserver did not become healthy:\n" + testing.Processes.log(proc))
    kubeconfig = testing.write_kubeconfig(
        env["root"] / "admin.kubeconfig", server, env["pki"].ca, *admin, user="admin", embed=True
    )
    return {"server": server, "etcd": etcd_url, "admin": admin, "kubeconfig": kubeconfig, "apiserver": proc}


def _get(cluster, env, path, cert=None):
    return requests.get(
        cluster["server"] + path, verify=env["pki"].ca, cert=cert or cluster["admin"], timeout=5
    )


def _kubeconfig_for(env, cluster, stem, cn, orgs=()):
    cert, key = env["pki"].issue(stem, cn, orgs=orgs)
    return testing.write_kubeconfig(
        env["root"] / (stem + ".kubeconfig"), cluster["server"], env["pki"].ca, cert, key, user=cn
    )


def _kubectl(env, cluster, *args):
    return subprocess.run(
        [env["bin"]["kubectl"], "--kubeconfig", cluster["kubeconfig"], *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def test_apiserver_healthz_needs_a_client_certificate(env, cluster):
    assert _get(cluster, env, "/healthz").text == "ok"
    anonymous = requests.get(cluster["server"] + "/healthz", verify=env["pki"].ca, timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.json()["reason"] == "Unauthorized"
    assert _get(cluster, env, "/version").json()["gitVersion"] == "v1.10.3"
    # A certificate from a foreign CA must not get through the TLS handshake.
    other = testing.Pki(env["root"] / "other-pki")
    foreign = other.issue("intruder", "admin", orgs=("system:masters",))
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(cluster["server"] + "/healthz", verify=env["pki"].ca, cert=foreign, timeout=5)


def test_rbac_forbids_unprivileged_users(env, cluster):
    nobody = env["pki"].issue("nobody", "nobody")
    resp = _get(cluster, env, "/api/v1/nodes", cert=nobody)
    assert resp.status_code == 403
    assert (
        resp.json()["message"] == 'nodes is forbidden: User "nobody" cannot list nodes at the cluster scope'
    )


def test_kubelet_registers_only_its_own_node(env, cluster, request):
    procs = env["procs"]
    kubeconfig = _kubeconfig_for(env, cluster, "kubelet-node-a", "system:node:node-a", ("system:nodes",))
    healthz_port = free_port()
    from tests.integration.test_standin_kubelet import (
        FakeDocker,  # the kubelet refuses to start without docker
    )

    docker = FakeDocker(Path(env["bin"]["kubelet"]).parent / "docker.sock")
    request.addfinalizer(docker.close)
    common = ["--pod-infra-container-image=registry.local:5000/pause-amd64:3.1", "--fail-swap-on=false",
              f"--docker-endpoint=unix://{docker.path}"]
    good = procs.start(
        [
            env["bin"]["kubelet"],
            "--kubeconfig=" + kubeconfig,
            "--hostname-override=node-a",
            "--healthz-port=%d" % healthz_port,
            "--node-ip=127.0.0.1",
            *common,
        ],
        "kubelet-a",
    )
    node = wait_until(
        lambda: (
            _get(cluster, env, "/api/v1/nodes/node-a").ok
            and _get(cluster, env, "/api/v1/nodes/node-a").json()
        ),
        10,
        what="node-a registered",
    )
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.10.3"
    assert requests.get("http://127.0.0.1:%d/healthz" % healthz_port, timeout=5).text == "ok"

    # Same credentials, other node name: NodeRestriction must refuse the registration.
    bad = procs.start(
        [
            env["bin"]["kubelet"],
            "--kubeconfig=" + kubeconfig,
            "--hostname-override=node-b",
            "--healthz-port=0",
            *common,
        ],
        "kubelet-b",
    )
    wait_until(
        lambda: 'node "node-a" cannot modify node "node-b"' in testing.Processes.log(bad),
        10,
        what="kubelet-b refused",
    )
    assert _get(cluster, env, "/api/v1/nodes/node-b").status_code == 404

    table = _kubectl(env, cluster, "get", "nodes")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert lines[1].split()[:3] == ["node-a", "Ready", "<none>"] and lines[1].split()[-1] == "v1.10.3"
    assert len(lines) == 2
    assert procs.stop(bad) == 0
    assert procs.stop(good) == 0


def test_controller_manager_leader_failover(env, cluster):
    procs = env["procs"]
    kubeconfig = _kubeconfig_for(env, cluster, "controller-manager", "system:kube-controller-manager")
    lock = "/api/v1/namespaces/kube-system/endpoints/kube-controller-manager"

    def start(name, port):
        return procs.start(
            [
                env["bin"]["kube-controller-manager"],
                "--kubeconfig=" + kubeconfig,
                "--leader-elect=true",
                "--leader-elect-lease-duration=4s",
                "--leader-elect-renew-deadline=3s",
                "--leader-elect-retry-period=1s",
                "--address=127.0.0.1",
                "--port=%d" % port,
                "--use-service-account-credentials",
                "--root-ca-file=" + env["pki"].ca,
            ],
            name,
        )

    def record():
        resp = _get(cluster, env, lock)
        if not resp.ok:
            return None
        return json.loads(resp.json()["metadata"]["annotations"]["control-plane.alpha.kubernetes.io/leader"])

    # the first on 10252: componentstatus probes 127.0.0.1:10252 as 1.10's apiserver does
    first, second = start("cm-1", 10252), start("cm-2", free_port())
    leader = wait_until(record, 10, what="a controller-manager leader")
    assert leader["leaseDurationSeconds"] == 4
    leaders = wait_until(
        lambda: [p for p in (first, second) if "successfully acquired lease" in testing.Processes.log(p)],
        5,
        what="leader log",
    )
    assert len(leaders) == 1
    follower = second if leaders[0] is first else first
    time.sleep(2)  # the follower keeps waiting while the leader renews
    assert record()["holderIdentity"] == leader["holderIdentity"]
    assert "successfully acquired lease" not in testing.Processes.log(follower)

    cs = _kubectl(env, cluster, "get", "cs", "controller-manager")
    assert cs.returncode == 0 and "Healthy" in cs.stdout.split("\n")[1], cs.stdout + cs.stderr

    killed_at = time.monotonic()
    assert procs.stop(leaders[0]) == 0  # SIGTERM -> clean exit 0, lock is not released (1.10 behaviour)
    new = wait_until(
        lambda: (record() or {}).get("holderIdentity") != leader["holderIdentity"] and record(),
        12,
        what="takeover by the follower",
    )
    took = time.monotonic() - killed_at
    assert 2.0 <= took <= 9.0, "takeover after %.1fs, lease is 4s" % took
    assert new["leaderTransitions"] == leader["leaderTransitions"] + 1
    assert "successfully acquired lease" in testing.Processes.log(follower)
    assert procs.stop(follower) == 0


def test_flanneld_writes_subnet_env_from_etcd_v2_config(env, cluster):
    pki, procs = env["pki"], env["procs"]
    cert, key = pki.issue("flanneld", "flanneld")
    # host-gw with no other lease and no -ip-masq: this flanneld runs in the machine's own network namespace, so
    # it must change nothing there (the vxlan and iptables work is tested in namespaces: test_flannel_vxlan.py)
    config = {"Network": "198.19.202.0/24", "SubnetLen": 28, "Backend": {"Type": "host-gw"}}
    resp = requests.put(
        cluster["etcd"] + "/v2/keys/coreos.com/network/config",
        data={"value": json.dumps(config)},
        verify=pki.ca,
        cert=(cert, key),
        timeout=5,
    )
    assert resp.status_code in (200, 201), resp.text
    subnet_file = env["root"] / "run" / "flannel" / "subnet.env"
    proc = procs.start(
        [
            env["bin"]["flanneld"],
            "-etcd-endpoints=" + cluster["etcd"],
            "-etcd-cafile=" + pki.ca,
            "-etcd-certfile=" + cert,
            "-etcd-keyfile=" + key,
            "-iface=127.0.0.1",
            "-ip-masq=false",
            "--subnet-file=" + str(subnet_file),
        ],
        "flanneld",
    )
    wait_until(subnet_file.exists, 10, what="subnet.env")
    env_vars = dict(line.split("=", 1) for line in subnet_file.read_text().splitlines())
    assert env_vars["FLANNEL_NETWORK"] == "198.19.202.0/24"
    assert env_vars["FLANNEL_SUBNET"].startswith("198.19.202.") and env_vars["FLANNEL_SUBNET"].endswith("/28")
    lo_mtu = int(Path("/sys/class/net/lo/mtu").read_text())
    assert env_vars["FLANNEL_MTU"] == str(lo_mtu)  # host-gw: no overhead
    assert env_vars["FLANNEL_IPMASQ"] == "false"

    first = env_vars["FLANNEL_SUBNET"].split("/")[0]
    subnet_key = "%s.%d-28" % (first.rsplit(".", 1)[0], int(first.rsplit(".", 1)[1]) - 1)
    lease = requests.get(
        cluster["etcd"] + "/v2/keys/coreos.com/network/subnets/" + subnet_key,
        verify=pki.ca,
        cert=(cert, key),
        timeout=5,
    ).json()["node"]
    attrs = json.loads(lease["value"])
    assert attrs["PublicIP"] == "127.0.0.1" and attrs["BackendType"] == "host-gw"
    assert 0 < lease["ttl"] <= 86400

    docker_env = env["root"] / "docker_opts.env"
    subprocess.run(
        [
            "sh",
            env["bin"]["mk-docker-opts.sh"],
            "-f",
            str(subnet_file),
            "-d",
            str(docker_env),
            "-k",
            "DOCKER_NETWORK_OPTIONS",
        ],
        check=True,
        timeout=10,
        env={"PATH": "/usr/bin:/bin"},
    )
    lines = docker_env.read_text().splitlines()
    assert (
        'DOCKER_NETWORK_OPTIONS=" --bip=%s --ip-masq=true --mtu=%s"'
        % (env_vars["FLANNEL_SUBNET"], env_vars["FLANNEL_MTU"])
        in lines
    )
    assert 'DOCKER_OPT_BIP="--bip=%s"' % env_vars["FLANNEL_SUBNET"] in lines
    assert procs.stop(proc) == 0


def test_kube_proxy_and_scheduler_talk_to_the_apiserver(env, cluster):
    procs = env["procs"]
    proxy_kc = _kubeconfig_for(env, cluster, "kube-proxy", "system:kube-proxy")
    healthz = free_port()
    proxy = procs.start(
        [
            env["bin"]["kube-proxy"],
            "--kubeconfig=" + proxy_kc,
            "--hostname-override=node-x",
            "--healthz-bind-address=127.0.0.1:%d" % healthz,
            "--proxy-mode=iptables",
        ],
        "kube-proxy",
    )
    wait_until(
        lambda: requests.get("http://127.0.0.1:%d/healthz" % healthz, timeout=2).ok, 10, what="proxy healthz"
    )
    sched_kc = _kubeconfig_for(env, cluster, "kube-scheduler", "system:kube-scheduler")
    sched = procs.start(
        [
            env["bin"]["kube-scheduler"],
            "--kubeconfig=" + sched_kc,
            "--address=127.0.0.1",
            "--port=10251",  # componentstatus probes 127.0.0.1:10251 as 1.10's apiserver does
            "--leader-elect-lease-duration=4s",
            "--leader-elect-renew-deadline=3s",
            "--leader-elect-retry-period=1s",
        ],
        "kube-scheduler",
    )
    wait_until(
        lambda: (
            _get(cluster, env, "/api/v1/componentstatuses/scheduler").json()["conditions"][0]["status"]
            == "True"
        ),
        10,
        what="scheduler healthy in componentstatuses",
    )
    assert procs.stop(sched) == 0
    cond = _get(cluster, env, "/api/v1/componentstatuses/scheduler").json()["conditions"][0]
    assert cond["status"] == "False" and "127.0.0.1:10251: connect: connection refused" in cond["error"], cond
    assert procs.stop(proxy) == 0


def test_apiserver_healthz_fails_when_etcd_stops(env):
    etcd, etcd_url = _start_etcd(env, "etcd-doomed")
    proc, server = _start_apiserver(env, etcd_url, "apiserver-doomed")
    admin = env["pki"].issue("admin-doomed", "admin", orgs=("system:masters",))

    def healthz():
        return requests.get(server + "/healthz", verify=env["pki"].ca, cert=admin, timeout=10)

    wait_until(lambda: healthz().text == "ok", 15, what="healthz ok")
    env["procs"].stop(etcd)
    failed = []  # a 500 Response is falsy, so collect it instead of returning it from the predicate
    wait_until(lambda: failed.append(healthz()) or failed[-1].status_code == 500, 15, what="healthz failing")
    assert "[-]etcd failed" in failed[-1].text and failed[-1].text.rstrip().endswith("healthz check failed")
    assert env["procs"].stop(proc) == 0
