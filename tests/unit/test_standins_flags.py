"""Unit tests of the stand-in executables: flag tables, flag syntax, value types, file checks, YAML."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import standins
from tests.fixtures.standins import _runtime as rt

_ROOT = Path(__file__).resolve().parents[2]

rt._FLAG_TABLES = standins.flag_tables()  # what the generated header defines

KUBE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
SAMPLES = {
    "bool": "true",
    "version[=true]": "false",
    "int": "1",
    "int32": "1",
    "int64": "1",
    "uint": "1",
    "Level": "2",
    "float": "0.5",
    "float32": "0.5",
    "duration": "1m30s",
    "ip": "127.0.0.1",
    "ipNet": "10.0.0.0/24",
    "cidrs": "10.0.0.0/8,192.168.0.0/16",
    "portRange": "30000-32767",
    "port-range": "2000-3000",
    "mapStringBool": "a=true",
    "mapStringString": "a=b",
    "strings": "a,b",
    "stringArray": "x",
    "namedCertKey": "c.pem,k.pem",
    "[]api.Taint": "k=v:NoSchedule",
    "severity": "ERROR",
    "traceLocation": "file.go:10",
    "moduleSpec": "x=2",
    "string (ip:port)": "127.0.0.1:10256",
}


def _sample(spec):
    if spec.name == "feature-gates":
        return "PodPriority=true"
    return SAMPLES.get(spec.type, "x")


@pytest.fixture(scope="module")
def bins(tmp_path_factory):
    return standins.write_all(tmp_path_factory.mktemp("bin"))


def _run(bins, name, *args, cwd=None):
    return subprocess.run(
        [bins[name], *args], capture_output=True, text=True, timeout=20, cwd=cwd, check=False
    )


# ------------------------------------------------------------------------------------------ flag tables


@pytest.mark.parametrize("component", KUBE + ("kubectl",))
def test_every_table_flag_is_accepted_with_a_typed_value(component):
    table = rt.load_table(component)
    assert len(table.specs) > 20
    for spec in table.specs:
        flags = rt.parse_pflag(table, ["--%s=%s" % (spec.name, _sample(spec))], warn=lambda m: None)
        assert spec.name in flags.changed, spec.name
        assert flags.args == []


def test_every_flanneld_flag_is_accepted_in_go_flag_syntax():
    table = rt.load_table("flanneld")
    assert len(table.specs) == 23
    for spec in table.specs:
        for dashes in ("-", "--"):
            flags = rt.parse_goflag(table, ["%s%s=%s" % (dashes, spec.name, _sample(spec))])
            assert spec.name in flags.changed



def test_flag_counts_match_the_reference_readme():
    tables = standins.flag_tables()
    assert {k: len(v) for k, v in tables.items() if k != "kubectl"} == {
        "kube-apiserver": 156,
        "kube-controller-manager": 98,
        "kube-scheduler": 35,
        "kube-proxy": 44,
        "kubelet": 172,
        "flanneld-0.10.0": 23,
    }


# ------------------------------------------------------------------------------------------ flag syntax


def test_pflag_syntax_forms():
    table = rt.load_table("kube-apiserver")
    flags = rt.parse_pflag(
        table,
        [
            "--secure-port",
            "7443",
            "--anonymous-auth=false",
            "--profiling",
            "-v=3",
            "--etcd-servers=https://a:2379,https://b:2379",
            "--",
            "rest",
        ],
        warn=lambda m: None,
    )
    assert flags["secure-port"] == 7443 and flags["anonymous-auth"] is False and flags["profiling"] is True
    assert flags["v"] == 3 and flags["etcd-servers"] == ["https://a:2379", "https://b:2379"]
    assert flags.args == ["rest"]
    # A bool never consumes the next word: "false" becomes a positional argument like in pflag.
    assert rt.parse_pflag(table, ["--anonymous-auth", "false"], warn=lambda m: None).args == ["false"]
    # Repeated slice flags append after the first use replaced the default.
    flags = rt.parse_pflag(table, ["--service-account-key-file=a", "--service-account-key-file=b"])
    assert flags["service-account-key-file"] == ["a", "b"]


def test_underscores_are_normalised_like_kubernetes_flags():
    table = rt.load_table("kube-controller-manager")
    assert rt.parse_pflag(table, ["--concurrent-rc-syncs=3"])["concurrent_rc_syncs"] == 3
    assert rt.parse_pflag(table, ["--leader_elect=false"])["leader-elect"] is False


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--foo"], "unknown flag: --foo"),
        (["--foo=1"], "unknown flag: --foo"),
        (["-x"], "unknown shorthand flag: 'x' in -x"),
        (["--secure-port"], "flag needs an argument: --secure-port"),
        (
            ["--secure-port=abc"],
            (
                'invalid argument "abc" for "--secure-port" flag: strconv.ParseInt: parsing "abc": '
                "invalid syntax"
            ),
        ),
        (
            ["--anonymous-auth=maybe"],
            (
                'invalid argument "maybe" for "--anonymous-auth" flag: strconv.ParseBool: '
                'parsing "maybe": invalid syntax'
            ),
        ),
        (
            ["--bind-address=1.2.3"],
            'invalid argument "1.2.3" for "--bind-address" flag: failed to parse IP: "1.2.3"',
        ),
        (
            ["--event-ttl=10"],
            'invalid argument "10" for "--event-ttl" flag: time: missing unit in duration 10',
        ),
        (
            ["--event-ttl=5x"],
            'invalid argument "5x" for "--event-ttl" flag: time: unknown unit x in duration 5x',
        ),
        (["--service-node-port-range=3-2"], '"3-2" is not a valid port range'),
        (["--service-cluster-ip-range=10.0.0.0"], "invalid CIDR address: 10.0.0.0"),
        (["--feature-gates=NoSuchGate=true"], "unrecognized key: NoSuchGate"),
        (["--feature-gates=PodPriority=yes"], "invalid value of PodPriority: yes"),
        (["--kubelet-port=-1"], 'strconv.ParseUint: parsing "-1": invalid syntax'),
        (["--apiserver-count=99999999999999999999"], "value out of range"),
    ],
)
def test_pflag_errors(argv, message):
    with pytest.raises(rt.FlagError) as exc:
        rt.parse_pflag(rt.load_table("kube-apiserver"), argv, warn=lambda m: None)
    assert message in str(exc.value)


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("0", 0),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        ("300ms", 0.3),
        ("2h45m10s", 9910),
        ("-1m", -60),
        ("8760h0m0s", 8760 * 3600),
    ],
)
def test_go_durations(text, seconds):
    assert rt.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "s", "1d", "1h-5m", "h1"])
def test_bad_go_durations(text):
    with pytest.raises(rt.FlagValueError):
        rt.parse_duration(text)


@pytest.mark.parametrize(
    "text, value",
    [("1", True), ("t", True), ("TRUE", True), ("True", True), ("0", False), ("F", False), ("false", False)],
)
def test_go_bools(text, value):
    assert rt.parse_bool(text) is value
    with pytest.raises(rt.FlagValueError):
        rt.parse_bool("yes")


def test_kubelet_eviction_maps_accept_langle_pairs():
    flags = rt.parse_pflag(
        rt.load_table("kubelet"),
        ["--eviction-hard=memory.available<100Mi,nodefs.available<10%"],
        warn=lambda m: None,
    )
    assert flags["eviction-hard"] == {"memory.available": "100Mi", "nodefs.available": "10%"}


def test_goflag_stops_at_first_argument_and_reads_env(monkeypatch):
    table = rt.load_table("flanneld")
    monkeypatch.setenv("FLANNELD_ETCD_PREFIX", "/from/env")
    monkeypatch.setenv("FLANNELD_IP_MASQ", "true")
    flags = rt.parse_goflag(
        table, ["-iface", "eth0", "--iface=eth1", "-ip-masq=false", "extra", "-bogus"], env_prefix="FLANNELD"
    )
    assert flags["iface"] == ["eth0", "eth1"]
    assert flags["ip-masq"] is False  # command line wins over the environment
    assert flags["etcd-prefix"] == "/from/env"
    assert flags.args == ["extra", "-bogus"]
    with pytest.raises(rt.FlagError, match='invalid value "x" for flag -healthz-port'):
        rt.parse_goflag(table, ["-healthz-port=x"])


# ------------------------------------------------------------------------------- executables as processes


def test_scripts_are_self_contained_stdlib_python39():
    stdlib = sys.stdlib_module_names
    for name in standins.NAMES:
        src = standins.executable(name).decode()
        assert src.startswith("#!/usr/bin/python3\n")  # Debian's, where python3-grpcio is installed
        tree = ast.parse(src, feature_version=(3, 9))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, "relative import in %s" % name
                mods = [node.module]
            else:
                continue
            for mod in mods:
                # grpc (exactly): the etcd v3 client's, see test_standins_modules
                assert mod == "grpc" or mod.split(".")[0] in stdlib, "%s imports %s" % (name, mod)
        assert "_EMBEDDED_NAME = %r" % name in src


def test_unknown_flag_output_shape(bins, tmp_path):
    res = _run(bins, "kube-apiserver", "--foo", cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.splitlines() == ["Error: unknown flag: --foo", "Run 'kube-apiserver --help' for usage."]
    res = _run(bins, "flanneld", "-foo", cwd=tmp_path)
    assert res.returncode == 2  # Go flag.ExitOnError
    lines = res.stderr.splitlines()
    assert lines[0] == "flag provided but not defined: -foo" and lines[1].startswith("Usage")
    assert "  -etcd-endpoints string" in lines


def test_version_help_and_dispatch_on_argv0(bins, tmp_path):
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"):
        res = _run(bins, name, "--version", cwd=tmp_path)
        assert (res.returncode, res.stdout) == (0, "Kubernetes v1.10.3\n")
    assert _run(bins, "flanneld", "-version").stderr == "v0.10.0\n"
    help_text = _run(bins, "kube-apiserver", "--help").stdout
    assert "--etcd-servers strings" in help_text and "--ssh-user" not in help_text  # hidden flag
    link = tmp_path / "kubelet"
    link.symlink_to(bins["kube-scheduler"])  # hyperkube-style: argv[0] decides
    res = subprocess.run([str(link), "--help"], capture_output=True, text=True, timeout=20, check=False)
    assert "kubelet [flags]" in res.stdout


def test_deprecated_flags_warn(bins):
    res = _run(bins, "kube-apiserver", "--insecure-port=0", "--version")
    assert res.stderr.startswith("Flag --insecure-port has been deprecated, ")
    assert res.returncode == 0


def test_missing_and_broken_files_are_startup_errors(bins, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\n!!!notbase64\n-----END CERTIFICATE-----\n")
    key_only = tmp_path / "key.pem"
    key_only.write_text("-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n")
    base = ["--etcd-servers=https://127.0.0.1:1", "--insecure-port=0", "--secure-port=0"]
    cases = [
        (
            ["--client-ca-file=/nonexistent/ca.pem"],
            ('--client-ca-file "/nonexistent/ca.pem": open /nonexistent/ca.pem: no such file or directory'),
        ),
        (["--client-ca-file=%s" % garbage], '--client-ca-file "%s": failed to decode PEM block' % garbage),
        (["--client-ca-file=%s" % key_only], "data does not contain any valid RSA or ECDSA certificates"),
        (["--tls-cert-file=%s" % key_only, "--tls-private-key-file=%s" % key_only], "--tls-cert-file"),
        (["--etcd-certfile=/x.pem"], "--etcd-certfile"),
    ]
    for extra, message in cases:
        res = _run(bins, "kube-apiserver", *base, *extra)
        assert res.returncode == 1, extra
        assert message in res.stderr, (extra, res.stderr)


def test_kubeconfig_problems_name_the_file(bins, tmp_path):
    kc = tmp_path / "kubeconfig"
    kc.write_text(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {}\ncontexts:\n- name: x\n"
        "  context: {cluster: c, user: u}\ncurrent-context: x\nusers:\n- name: u\n  user: {}\n"
    )
    res = _run(bins, "kube-controller-manager", "--kubeconfig=%s" % kc)
    assert res.returncode == 1 and 'no server found for cluster "c"' in res.stderr and str(kc) in res.stderr
    res = _run(bins, "kube-scheduler", "--kubeconfig=/nope/kubeconfig")
    assert res.returncode == 1 and "/nope/kubeconfig" in res.stderr
    kc.write_text("clusters: [\n")
    res = _run(bins, "kube-proxy", "--kubeconfig=%s" % kc)
    assert res.returncode == 1 and "error loading config file" in res.stderr


def test_kubelet_rejects_bad_image_reference_and_config_kind(bins, tmp_path):
    res = _run(bins, "kubelet", "--pod-infra-container-image=Not A Ref", "--fail-swap-on=false")
    assert res.returncode == 1 and "--pod-infra-container-image" in res.stderr
    cfg = tmp_path / "kubelet.yaml"
    cfg.write_text("kind: KubeProxyConfiguration\napiVersion: kubeproxy.config.k8s.io/v1alpha1\n")
    res = _run(bins, "kubelet", "--config=%s" % cfg, "--fail-swap-on=false")
    assert res.returncode == 1 and "failed to load Kubelet config file" in res.stderr


def test_kubectl_rejects_unknown_subcommands_and_flags(bins):
    res = _run(bins, "kubectl", "frobnicate")
    assert res.returncode == 1 and res.stderr.startswith('Error: unknown command "frobnicate" for "kubectl"')
    res = _run(bins, "kubectl", "get", "nodes", "--client")
    assert res.returncode == 1 and "unknown flag: --client" in res.stderr
    res = _run(bins, "kubectl", "version", "--client", "--short")
    assert (res.returncode, res.stdout) == (0, "Client Version: v1.10.3\n")


# ------------------------------------------------------------------------------------------ YAML reader


def test_yaml_reader_handles_kubeconfig_shapes():
    doc = rt.parse_yaml("""
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: TFMwdA==   # comment
    server: https://10.0.0.1:6443
  name: kubernetes
contexts:
  - context: {cluster: kubernetes, user: "admin"}
    name: 'it''s'
current-context: default
preferences: {}
list: [a, "b", 3]
users:
- name: admin
  user:
    token: abc#def
""")
    assert doc["clusters"] == [
        {
            "cluster": {"certificate-authority-data": "TFMwdA==", "server": "https://10.0.0.1:6443"},
            "name": "kubernetes",
        }
    ]
    assert doc["contexts"] == [{"context": {"cluster": "kubernetes", "user": "admin"}, "name": "it's"}]
    assert doc["preferences"] == {} and doc["list"] == ["a", "b", 3]
    assert doc["users"][0]["user"]["token"] == "abc#def"


@pytest.mark.parametrize(
    "text", ["a: 1\n  b: 2\n", "a: [1, 2\n", "a: &x 1\n", "a: 1\na: 2\n", "- a\nb: 1\n"]
)
def test_yaml_reader_rejects_malformed_or_unsupported(text):
    with pytest.raises(rt.YamlError):
        rt.parse_yaml(text)


def test_yaml_round_trip():
    value = {
        "kind": "Node",
        "metadata": {"name": "n1", "labels": {"a/b": "true"}},
        "empty": {},
        "none": None,
        "items": [{"x": 1, "y": [1, "two", {"z": "3"}]}, "plain"],
        "text": "a: b",
    }
    assert rt.parse_yaml(rt.dump_yaml(value)) == value


# ---------------------------------------------------------------------------------------- mk-docker-opts


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            [],
            [
                'DOCKER_OPT_BIP="--bip=10.1.5.1/24"',
                'DOCKER_OPT_IPMASQ="--ip-masq=true"',
                'DOCKER_OPT_MTU="--mtu=1450"',
                'DOCKER_OPTS=" --bip=10.1.5.1/24 --ip-masq=true --mtu=1450"',
            ],
        ),
        (["-c", "-m"], ['DOCKER_OPTS=" --bip=10.1.5.1/24 --mtu=1450"']),
        (
            ["-i"],
            [
                'DOCKER_OPT_BIP="--bip=10.1.5.1/24"',
                'DOCKER_OPT_IPMASQ="--ip-masq=true"',
                'DOCKER_OPT_MTU="--mtu=1450"',
            ],
        ),
        (
            ["-c", "-k", "DOCKER_NETWORK_OPTIONS"],
            ['DOCKER_NETWORK_OPTIONS=" --bip=10.1.5.1/24 --ip-masq=true --mtu=1450"'],
        ),
    ],
)
def test_mk_docker_opts(bins, tmp_path, args, expected):
    subnet = tmp_path / "subnet.env"
    subnet.write_text(
        "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
    )
    out = tmp_path / "docker.env"
    subprocess.run(
        ["sh", bins["mk-docker-opts.sh"], "-f", str(subnet), "-d", str(out), *args],
        check=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        timeout=10,
    )
    assert out.read_text().splitlines() == expected
