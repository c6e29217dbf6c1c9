"""CIS Kubernetes Benchmark 1.2.0 (Kubernetes 1.8-1.10) against the rendered files, and secrets encrypted at rest.

Items are numbered and titled as kube-bench's cfg/1.8 (master.yaml, node.yaml) checks them. Each one is
checked on the golden tree (tests/golden/example, which test_render.test_golden keeps equal to what the
templates render), on every host that runs the component, so a regression fails naming the item. The items
left out are listed, with the reason, in README.md's table "CIS 1.2 items not applied"; a test keeps the
two lists complete and disjoint.

Where kube-bench's check reads `--admission-control` (the pre-1.10 name), the check here reads the plugins
1.10 actually enables: `--admission-control` if given, else `--enable-admission-plugins` minus
`--disable-admission-plugins` (the rendered flags use the 1.10 names; see README).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import stat
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional

import pytest
import yaml

from installer import inventory, pki, pki_material, render

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "example"
README = ROOT / "README.md"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
K = "/etc/kubernetes"
UNITS = "/etc/systemd/system"

# component -> (flag file, variable); every component also reads /etc/kubernetes/config
ENV_FILES = {
    "kube-apiserver": (f"{K}/apiserver", "KUBE_APISERVER_ARGS"),
    "kube-controller-manager": (f"{K}/controller-manager", "KUBE_CONTROLLER_MANAGER_ARGS"),
    "kube-scheduler": (f"{K}/scheduler", "KUBE_SCHEDULER_ARGS"),
    "kubelet": (f"{K}/kubelet", "KUBELET_ARGS"),
}
ETCD_CONF = "/etc/etcd/etcd.conf"
# what kubelet 1.10 --protect-kernel-defaults=true compares the kernel against
KUBELET_KERNEL = {"vm.overcommit_memory": "1", "vm.panic_on_oom": "0", "kernel.panic": "10",
                  "kernel.panic_on_oops": "1", "kernel.keys.root_maxkeys": "1000000",
                  "kernel.keys.root_maxbytes": "25000000"}


# ------------------------------------------------------------------ reading the golden tree

def hosts() -> List[str]:
    return sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())


def read(host: str, path: str) -> Optional[str]:
    p = GOLDEN / host / path.lstrip("/")
    return p.read_text() if p.is_file() else None


def hosts_with(path: str) -> List[str]:
    return [h for h in hosts() if read(h, path) is not None]


def modes() -> Dict[str, tuple]:
    """{host + remote path: (mode, owner)} from MODES."""
    out = {}
    for line in (GOLDEN / "MODES").read_text().splitlines():
        mode, owner, rel = line.split()
        out[rel] = (int(mode, 8), owner)
    return out


def flags_of(host: str, component: str) -> Dict[str, str]:
    """--name -> value of the component's command line on host (the two EnvironmentFiles its unit reads)."""
    path, var = ENV_FILES[component]
    args = render.parse_env_file(read(host, path))[var].split()
    common = render.parse_env_file(read(host, f"{K}/config"))
    args += [a for v in common.values() for a in v.split()]
    out: Dict[str, str] = {}
    for a in args:
        name, _, value = a.partition("=")
        assert name not in out, f"{component} on {host}: {name} given twice"
        out[name] = value
    return out


def etcd_flags(host: str) -> Dict[str, str]:
    """etcd's settings as flags: etcd reads ETCD_<FLAG> variables (here from etcd.conf) like --<flag>."""
    env = render.parse_env_file(read(host, ETCD_CONF))
    return {"--" + k[len("ETCD_"):].lower().replace("_", "-"): v for k, v in env.items() if k.startswith("ETCD_")}


def admission(f: Dict[str, str]) -> List[str]:
    if "--admission-control" in f:
        return f["--admission-control"].split(",")
    off = set(f.get("--disable-admission-plugins", "").split(","))
    return [p for p in f.get("--enable-admission-plugins", "").split(",") if p and p not in off]


def gates(f: Dict[str, str]) -> Dict[str, str]:
    pairs = [g.split("=", 1) for g in f.get("--feature-gates", "").split(",") if g]
    return {k: v.lower() for k, v in pairs}


def seconds(duration: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a Go duration: {duration!r}"
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[u] for n, u in parts)


# ------------------------------------------------------------------ checks (each returns a problem or None)

Check = Callable[[Dict[str, str]], Optional[str]]


def eq(flag: str, want: str) -> Check:
    return lambda f: None if f.get(flag, "").lower() == want else f"{flag} is {f.get(flag, '<unset>')!r}, want {want}"


def unset(flag: str) -> Check:
    return lambda f: f"{flag} is set" if flag in f else None


def unset_or(flag: str, want: str) -> Check:
    return lambda f: None if flag not in f else eq(flag, want)(f)


def not_value(flag: str, bad: str) -> Check:
    return lambda f: f"{flag} is {bad}" if f.get(flag, "").lower() == bad else None


def is_set(*names: str) -> Check:
    return lambda f: next((f"{n} is not set" for n in names if not f.get(n)), None)


def gte(flag: str, least: int) -> Check:
    return lambda f: None if f.get(flag, "").isdigit() and int(f[flag]) >= least else f"{flag} < {least}"


def has(flag: str, item: str) -> Check:
    return lambda f: None if item in f.get(flag, "").split(",") else f"{flag} lacks {item}"


def lacks(flag: str, item: str) -> Check:
    """Set, and without item (kube-bench: set: true, op: nothave)."""
    def check(f: Dict[str, str]) -> Optional[str]:
        if flag not in f:
            return f"{flag} is not set"
        return f"{flag} has {item}" if item in f[flag].split(",") else None
    return check


def plugin(name: str) -> Check:
    return lambda f: None if name in admission(f) else f"admission plugin {name} is not enabled"


def no_plugin(name: str) -> Check:
    return lambda f: f"admission plugin {name} is enabled" if name in admission(f) else None


def gate(name: str, want: str) -> Check:
    return lambda f: None if gates(f).get(name) == want else f"feature gate {name} is not {want}"


def positive_duration(flag: str) -> Check:
    return lambda f: None if flag in f and seconds(f[flag]) > 0 else f"{flag} is unset or 0"


def each(*checks: Check) -> Check:
    return lambda f: next((p for p in (c(f) for c in checks) if p), None)


def config_file(flag: str, kind: str,
                test: Callable[[dict], Optional[str]] = lambda d: None) -> Callable[[str, Dict[str, str]], Optional[str]]:
    """The flag names a file rendered on the same host whose YAML has that kind (and passes test)."""
    def check(host: str, f: Dict[str, str]) -> Optional[str]:
        text = read(host, f.get(flag, "/nonexistent"))
        if text is None:
            return f"{flag}={f.get(flag)} is not a rendered file"
        doc = yaml.safe_load(text)
        return f"{f[flag]} is not a {kind}" if doc.get("kind") != kind else test(doc)
    return check


def _encryption(doc: dict) -> Optional[str]:
    providers = [list(p) for r in doc["resources"] if "secrets" in r["resources"] for p in r["providers"]]
    return None if providers and providers[0] == ["aescbc"] else f"secrets' first provider is {providers[:1]}"


def _event_rate_limit(host: str):
    def test(doc: dict) -> Optional[str]:
        cfg = next((p for p in doc.get("plugins", []) if p.get("name") == "EventRateLimit"), None)
        text = read(host, cfg["path"]) if cfg and cfg.get("path") else None
        if text is None:
            return "no rendered EventRateLimit configuration"
        limits = yaml.safe_load(text)
        ok = limits.get("kind") == "Configuration" and limits.get("limits")
        return None if ok else "EventRateLimit configuration without limits"
    return test


def file_mode(*paths: str, most: int = 0o644) -> Callable[[], Optional[str]]:
    """Every path exists on the hosts that should have it, mode `most` or stricter, owned by root."""
    def check() -> Optional[str]:
        m = modes()
        for path in paths:
            found = [(rel, v) for rel, v in m.items() if rel.split("/", 1)[1] == path.lstrip("/")]
            if not found:
                return f"{path} is not rendered anywhere"
            for rel, (mode, owner) in found:
                if mode & ~most & 0o777 or owner != "root":
                    return f"{rel} is {mode:o} {owner}"
        return None
    return check


# ------------------------------------------------------------------ the items

class Item(NamedTuple):
    id: str
    title: str
    component: str  # kube-*, kubelet, etcd, file, sysctl
    check: Callable


ITEMS = [
    # 1.1 API server
    Item("1.1.1", "Ensure that the --anonymous-auth argument is set to false", "kube-apiserver",
         eq("--anonymous-auth", "false")),
    Item("1.1.2", "Ensure that the --basic-auth-file argument is not set", "kube-apiserver",
         unset("--basic-auth-file")),
    Item("1.1.3", "Ensure that the --insecure-allow-any-token argument is not set", "kube-apiserver",
         unset("--insecure-allow-any-token")),
    Item("1.1.4", "Ensure that the --kubelet-https argument is set to true", "kube-apiserver",
         unset_or("--kubelet-https", "true")),
    Item("1.1.5", "Ensure that the --insecure-bind-address argument is not set", "kube-apiserver",
         unset("--insecure-bind-address")),
    Item("1.1.6", "Ensure that the --insecure-port argument is set to 0", "kube-apiserver",
         eq("--insecure-port", "0")),
    Item("1.1.7", "Ensure that the --secure-port argument is not set to 0", "kube-apiserver",
         not_value("--secure-port", "0")),
    Item("1.1.8", "Ensure that the --profiling argument is set to false", "kube-apiserver",
         eq("--profiling", "false")),
    Item("1.1.9", "Ensure that the --repair-malformed-updates argument is set to false", "kube-apiserver",
         eq("--repair-malformed-updates", "false")),
    Item("1.1.10", "Ensure that the admission control policy is not set to AlwaysAdmit", "kube-apiserver",
         no_plugin("AlwaysAdmit")),
    Item("1.1.11", "Ensure that the admission control policy is set to AlwaysPullImages", "kube-apiserver",
         plugin("AlwaysPullImages")),
    Item("1.1.12", "Ensure that the admission control policy is set to DenyEscalatingExec", "kube-apiserver",
         plugin("DenyEscalatingExec")),
    Item("1.1.13", "Ensure that the admission control policy is set to SecurityContextDeny", "kube-apiserver",
         plugin("SecurityContextDeny")),
    Item("1.1.14", "Ensure that the admission control policy is set to NamespaceLifecycle", "kube-apiserver",
         plugin("NamespaceLifecycle")),
    Item("1.1.15", "Ensure that the --audit-log-path argument is set as appropriate", "kube-apiserver",
         is_set("--audit-log-path")),
    Item("1.1.16", "Ensure that the --audit-log-maxage argument is set to 30 or as appropriate", "kube-apiserver",
         gte("--audit-log-maxage", 30)),
    Item("1.1.17", "Ensure that the --audit-log-maxbackup argument is set to 10 or as appropriate",
         "kube-apiserver", gte("--audit-log-maxbackup", 10)),
    Item("1.1.18", "Ensure that the --audit-log-maxsize argument is set to 100 or as appropriate",
         "kube-apiserver", gte("--audit-log-maxsize", 100)),
    Item("1.1.19", "Ensure that the --authorization-mode argument is not set to AlwaysAllow", "kube-apiserver",
         lacks("--authorization-mode", "AlwaysAllow")),
    Item("1.1.20", "Ensure that the --token-auth-file parameter is not set", "kube-apiserver",
         unset("--token-auth-file")),
    Item("1.1.21", "Ensure that the --kubelet-certificate-authority argument is set as appropriate",
         "kube-apiserver", is_set("--kubelet-certificate-authority")),
    Item("1.1.22", "Ensure that the --kubelet-client-certificate and --kubelet-client-key arguments are set as "
         "appropriate", "kube-apiserver", is_set("--kubelet-client-certificate", "--kubelet-client-key")),
    Item("1.1.23", "Ensure that the --service-account-lookup argument is set to true", "kube-apiserver",
         eq("--service-account-lookup", "true")),
    Item("1.1.25", "Ensure that the --service-account-key-file argument is set as appropriate", "kube-apiserver",
         is_set("--service-account-key-file")),
    Item("1.1.26", "Ensure that the --etcd-certfile and --etcd-keyfile arguments are set as appropriate",
         "kube-apiserver", is_set("--etcd-certfile", "--etcd-keyfile")),
    Item("1.1.27", "Ensure that the admission control policy is set to ServiceAccount", "kube-apiserver",
         plugin("ServiceAccount")),
    Item("1.1.28", "Ensure that the --tls-cert-file and --tls-private-key-file arguments are set as appropriate",
         "kube-apiserver", is_set("--tls-cert-file", "--tls-private-key-file")),
    Item("1.1.29", "Ensure that the --client-ca-file argument is set as appropriate", "kube-apiserver",
         is_set("--client-ca-file")),
    Item("1.1.30", "Ensure that the --etcd-cafile argument is set as appropriate", "kube-apiserver",
         is_set("--etcd-cafile")),
    Item("1.1.31", "Ensure that the --authorization-mode argument is set to Node", "kube-apiserver",
         has("--authorization-mode", "Node")),
    Item("1.1.32", "Ensure that the admission control policy is set to NodeRestriction", "kube-apiserver",
         plugin("NodeRestriction")),
    Item("1.1.33", "Ensure that the --experimental-encryption-provider-config argument is set as appropriate",
         "kube-apiserver+files", config_file("--experimental-encryption-provider-config", "EncryptionConfig")),
    Item("1.1.34", "Ensure that the encryption provider is set to aescbc", "kube-apiserver+files",
         config_file("--experimental-encryption-provider-config", "EncryptionConfig", _encryption)),
    Item("1.1.35", "Ensure that the admission control policy is set to EventRateLimit", "kube-apiserver+files",
         lambda host, f: plugin("EventRateLimit")(f) or config_file(
             "--admission-control-config-file", "AdmissionConfiguration", _event_rate_limit(host))(host, f)),
    Item("1.1.36", "Ensure that the AdvancedAuditing argument is not set to false", "kube-apiserver+files",
         lambda host, f: ("AdvancedAuditing is off" if gates(f).get("AdvancedAuditing") == "false" else None)
         or config_file("--audit-policy-file", "Policy")(host, f)),
    Item("1.1.37", "Ensure that the --request-timeout argument is set as appropriate", "kube-apiserver",
         positive_duration("--request-timeout")),
    # 1.2 scheduler
    Item("1.2.1", "Ensure that the --profiling argument is set to false", "kube-scheduler",
         eq("--profiling", "false")),
    # 1.3 controller manager
    Item("1.3.1", "Ensure that the --terminated-pod-gc-threshold argument is set as appropriate",
         "kube-controller-manager", is_set("--terminated-pod-gc-threshold")),
    Item("1.3.2", "Ensure that the --profiling argument is set to false", "kube-controller-manager",
         eq("--profiling", "false")),
    Item("1.3.3", "Ensure that the --use-service-account-credentials argument is set", "kube-controller-manager",
         eq("--use-service-account-credentials", "true")),
    Item("1.3.4", "Ensure that the --service-account-private-key-file argument is set as appropriate",
         "kube-controller-manager", is_set("--service-account-private-key-file")),
    Item("1.3.5", "Ensure that the --root-ca-file argument is set as appropriate", "kube-controller-manager",
         is_set("--root-ca-file")),
    Item("1.3.7", "Ensure that the RotateKubeletServerCertificate argument is set to true",
         "kube-controller-manager", gate("RotateKubeletServerCertificate", "true")),
    # 1.4 master configuration files: the "pod specification files" are our flag files and units
    Item("1.4.1", "Ensure that the API server pod specification file permissions are set to 644 or more "
         "restrictive", "file", file_mode(f"{K}/apiserver", f"{UNITS}/kube-apiserver.service")),
    Item("1.4.2", "Ensure that the API server pod specification file ownership is set to root:root", "file",
         file_mode(f"{K}/apiserver", f"{UNITS}/kube-apiserver.service", most=0o777)),
    Item("1.4.3", "Ensure that the controller manager pod specification file permissions are set to 644 or more "
         "restrictive", "file", file_mode(f"{K}/controller-manager", f"{UNITS}/kube-controller-manager.service")),
    Item("1.4.4", "Ensure that the controller manager pod specification file ownership is set to root:root",
         "file", file_mode(f"{K}/controller-manager", f"{UNITS}/kube-controller-manager.service", most=0o777)),
    Item("1.4.5", "Ensure that the scheduler pod specification file permissions are set to 644 or more "
         "restrictive", "file", file_mode(f"{K}/scheduler", f"{UNITS}/kube-scheduler.service")),
    Item("1.4.6", "Ensure that the scheduler pod specification file ownership is set to root:root", "file",
         file_mode(f"{K}/scheduler", f"{UNITS}/kube-scheduler.service", most=0o777)),
    Item("1.4.7", "Ensure that the etcd pod specification file permissions are set to 644 or more restrictive",
         "file", file_mode(ETCD_CONF, f"{UNITS}/etcd.service")),
    Item("1.4.8", "Ensure that the etcd pod specification file ownership is set to root:root", "file",
         file_mode(ETCD_CONF, f"{UNITS}/etcd.service", most=0o777)),
    Item("1.4.9", "Ensure that the Container Network Interface file permissions are set to 644 or more "
         "restrictive", "file", file_mode("/etc/cni/net.d/10-flannel.conflist")),
    Item("1.4.10", "Ensure that the Container Network Interface file ownership is set to root:root", "file",
         file_mode("/etc/cni/net.d/10-flannel.conflist", most=0o777)),
    Item("1.4.13", "Ensure that the admin.conf file permissions are set to 644 or more restrictive", "file",
         file_mode(f"{K}/admin.kubeconfig")),
    Item("1.4.14", "Ensure that the admin.conf file ownership is set to root:root", "file",
         file_mode(f"{K}/admin.kubeconfig", most=0o777)),
    Item("1.4.15", "Ensure that the scheduler.conf file permissions are set to 644 or more restrictive", "file",
         file_mode(f"{K}/scheduler.kubeconfig")),
    Item("1.4.16", "Ensure that the scheduler.conf file ownership is set to root:root", "file",
         file_mode(f"{K}/scheduler.kubeconfig", most=0o777)),
    Item("1.4.17", "Ensure that the controller-manager.conf file permissions are set to 644 or more restrictive",
         "file", file_mode(f"{K}/controller-manager.kubeconfig")),
    Item("1.4.18", "Ensure that the controller-manager.conf file ownership is set to root:root", "file",
         file_mode(f"{K}/controller-manager.kubeconfig", most=0o777)),
    # 1.5 etcd
    Item("1.5.1", "Ensure that the --cert-file and --key-file arguments are set as appropriate", "etcd",
         is_set("--cert-file", "--key-file")),
    Item("1.5.2", "Ensure that the --client-cert-auth argument is set to true", "etcd",
         eq("--client-cert-auth", "true")),
    Item("1.5.3", "Ensure that the --auto-tls argument is not set to true", "etcd", not_value("--auto-tls", "true")),
    Item("1.5.4", "Ensure that the --peer-cert-file and --peer-key-file arguments are set as appropriate", "etcd",
         is_set("--peer-cert-file", "--peer-key-file")),
    Item("1.5.5", "Ensure that the --peer-client-cert-auth argument is set to true", "etcd",
         eq("--peer-client-cert-auth", "true")),
    Item("1.5.6", "Ensure that the --peer-auto-tls argument is not set to true", "etcd",
         unset_or("--peer-auto-tls", "false")),
    Item("1.5.9", "Ensure that a unique Certificate Authority is used for etcd", "etcd",
         is_set("--trusted-ca-file")),
    # 2.1 kubelet
    Item("2.1.1", "Ensure that the --allow-privileged argument is set to false", "kubelet",
         eq("--allow-privileged", "false")),
    Item("2.1.2", "Ensure that the --anonymous-auth argument is set to false", "kubelet",
         eq("--anonymous-auth", "false")),
    Item("2.1.3", "Ensure that the --authorization-mode argument is not set to AlwaysAllow", "kubelet",
         lacks("--authorization-mode", "AlwaysAllow")),
    Item("2.1.4", "Ensure that the --client-ca-file argument is set as appropriate", "kubelet",
         is_set("--client-ca-file")),
    Item("2.1.5", "Ensure that the --read-only-port argument is set to 0", "kubelet", eq("--read-only-port", "0")),
    Item("2.1.6", "Ensure that the --streaming-connection-idle-timeout argument is not set to 0", "kubelet",
         positive_duration("--streaming-connection-idle-timeout")),
    Item("2.1.7", "Ensure that the --protect-kernel-defaults argument is set to true", "kubelet+sysctl",
         lambda host, f: eq("--protect-kernel-defaults", "true")(f) or kernel_defaults(host)),
    Item("2.1.8", "Ensure that the --make-iptables-util-chains argument is set to true", "kubelet",
         eq("--make-iptables-util-chains", "true")),
    Item("2.1.9", "Ensure that the --keep-terminated-pod-volumes argument is set to false", "kubelet",
         eq("--keep-terminated-pod-volumes", "false")),
    Item("2.1.11", "Ensure that the --event-qps argument is set to 0", "kubelet", eq("--event-qps", "0")),
    Item("2.1.12", "Ensure that the --tls-cert-file and --tls-private-key-file arguments are set as appropriate",
         "kubelet", is_set("--tls-cert-file", "--tls-private-key-file")),
    Item("2.1.13", "Ensure that the --cadvisor-port argument is set to 0", "kubelet", eq("--cadvisor-port", "0")),
    Item("2.1.14", "Ensure that the RotateKubeletClientCertificate argument is set to true", "kubelet",
         gate("RotateKubeletClientCertificate", "true")),
    # 2.2 node configuration files
    Item("2.2.1", "Ensure that the kubelet.conf file permissions are set to 644 or more restrictive", "file",
         file_mode(f"{K}/kubelet.kubeconfig")),
    Item("2.2.2", "Ensure that the kubelet.conf file ownership is set to root:root", "file",
         file_mode(f"{K}/kubelet.kubeconfig", most=0o777)),
    Item("2.2.3", "Ensure that the kubelet service file permissions are set to 644 or more restrictive", "file",
         file_mode(f"{UNITS}/kubelet.service", f"{K}/kubelet")),
    Item("2.2.4", "Ensure that the kubelet service file ownership is set to root:root", "file",
         file_mode(f"{UNITS}/kubelet.service", f"{K}/kubelet", most=0o777)),
    Item("2.2.5", "Ensure that the proxy kubeconfig file permissions are set to 644 or more restrictive", "file",
         file_mode(f"{K}/kube-proxy.kubeconfig")),
    Item("2.2.6", "Ensure that the proxy kubeconfig file ownership is set to root:root", "file",
         file_mode(f"{K}/kube-proxy.kubeconfig", most=0o777)),
    Item("2.2.7", "Ensure that the certificate authorities file permissions are set to 644 or more restrictive",
         "file", file_mode(render.PATHS["ca"])),
    Item("2.2.8", "Ensure that the client certificate authorities file ownership is set to root:root", "file",
         file_mode(render.PATHS["ca"], most=0o777)),
]
# every item of kube-bench's cfg/1.8 master.yaml (1.1-1.5) and node.yaml (2.1-2.2)
ALL_IDS = ([f"1.1.{i}" for i in range(1, 38)] + ["1.2.1"] + [f"1.3.{i}" for i in range(1, 8)]
           + [f"1.4.{i}" for i in range(1, 19)] + [f"1.5.{i}" for i in range(1, 10)]
           + [f"2.1.{i}" for i in range(1, 16)] + [f"2.2.{i}" for i in range(1, 9)])


def kernel_defaults(host: str) -> Optional[str]:
    """The node's sysctl file sets every kernel value kubelet --protect-kernel-defaults insists on."""
    text = read(host, "/etc/sysctl.d/k8s.conf") or ""
    have = dict(tuple(p.strip() for p in line.split("=", 1)) for line in text.splitlines()
                if "=" in line and not line.lstrip().startswith("#"))
    wrong = sorted(k for k, v in KUBELET_KERNEL.items() if have.get(k) != v)
    return f"/etc/sysctl.d/k8s.conf lacks {', '.join(wrong)}" if wrong else None


def problems(item: Item) -> List[str]:
    comp = item.component
    if comp == "file":
        p = item.check()
        return [p] if p else []
    base = comp.split("+")[0]
    if base == "etcd":
        targets = hosts_with(ETCD_CONF)
        flags = etcd_flags
    else:
        targets = hosts_with(ENV_FILES[base][0])
        flags = lambda h: flags_of(h, base)  # noqa: E731
    assert targets, f"no host renders {base}"
    out = []
    for h in targets:
        p = item.check(h, flags(h)) if "+" in comp else item.check(flags(h))
        if p:
            out.append(f"{h}: {p}")
    return out


@pytest.mark.parametrize("item", ITEMS, ids=[i.id for i in ITEMS])
def test_cis_item(item):
    found = problems(item)
    assert found == [], f"CIS 1.2.0 {item.id} \"{item.title}\" fails: {'; '.join(found)}"


def readme_not_applied() -> Dict[str, str]:
    """{item id: reason} of README's table "CIS 1.2 items not applied"."""
    text = README.read_text()
    start = text.index("CIS 1.2 items not applied")
    rows = {}
    for line in text[start:].splitlines()[1:]:
        if line.startswith("## "):
            break
        m = re.match(r"^\|\s*([\d.]+(?:\s*,\s*[\d.]+)*)\s*\|\s*(.+?)\s*\|\s*(.+?)\s*\|$", line)
        if m:
            for i in m.group(1).split(","):
                rows[i.strip()] = m.group(3)
    return rows


def test_every_item_is_checked_or_in_the_readme_table():
    checked = [i.id for i in ITEMS]
    left_out = readme_not_applied()
    assert len(set(checked)) == len(checked)
    assert sorted(set(checked) & set(left_out)) == []  # applied items are not listed as left out
    assert sorted(set(ALL_IDS) - set(checked) - set(left_out)) == []
    assert sorted((set(checked) | set(left_out)) - set(ALL_IDS)) == []
    assert all(len(reason) > 20 for reason in left_out.values())


def test_the_checks_can_fail():
    bad = {"--anonymous-auth": "true", "--basic-auth-file": "/x", "--enable-admission-plugins": "AlwaysAdmit",
           "--authorization-mode": "AlwaysAllow", "--feature-gates": "AdvancedAuditing=false",
           "--streaming-connection-idle-timeout": "0s"}
    assert eq("--anonymous-auth", "false")(bad) and unset("--basic-auth-file")(bad)
    assert no_plugin("AlwaysAdmit")(bad) and plugin("NodeRestriction")(bad)
    assert lacks("--authorization-mode", "AlwaysAllow")(bad) and gate("AdvancedAuditing", "true")(bad)
    assert positive_duration("--streaming-connection-idle-timeout")(bad) and gte("--audit-log-maxage", 30)(bad)
    assert admission({"--enable-admission-plugins": "A,B", "--disable-admission-plugins": "B"}) == ["A"]
    assert kernel_defaults("k8s-master1")  # a master runs no kubelet: its sysctl file lacks the kubelet's values


def test_addons_pass_the_hardened_admission():
    """SecurityContextDeny, DenyEscalatingExec and --allow-privileged=false: no addon asks for what they refuse."""
    refused = ("runAsUser", "fsGroup", "supplementalGroups", "seLinuxOptions", "privileged", "hostPID", "hostIPC")
    for manifest in sorted((ROOT / "manifests").glob("*.j2")):
        text = manifest.read_text()
        assert [k for k in refused if re.search(rf"\b{k}\s*:", text)] == [], manifest.name


# ------------------------------------------------------------------ secrets encrypted at rest

@pytest.fixture(scope="module")
def inv():
    return inventory.load(GOLDEN / "inventory.yaml")


@pytest.fixture()
def site(tmp_path, inv):
    p = pki.Pki(tmp_path / "state", clock=lambda: T0)
    p.ensure(inv)
    return p


def enc_file(p: pki.Pki, inv, host: str):
    return pki_material.material_for(p, inv, inv.host(host))[render.PATHS["encryption_config"]]


def test_encryption_key_is_made_once_on_site_32_bytes_0600(site, inv):
    key = site.dir / pki.ENCRYPTION_KEY
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(site.dir.stat().st_mode) == 0o700
    first = key.read_bytes()
    assert len(base64.b64decode(first.strip(), validate=True)) == 32
    before = enc_file(site, inv, "k8s-master1").content
    site.ensure(inv)  # a second run (render, apply, certs renew) keeps the key
    again = pki.Pki(site.state_dir, clock=lambda: T0 + dt.timedelta(days=400))
    again.ensure(inv)
    assert key.read_bytes() == first and enc_file(again, inv, "k8s-master1").content == before


def test_encryption_config_is_the_same_on_every_master_and_only_there(site, inv):
    files = {h.name: pki_material.material_for(site, inv, h) for h in inv.hosts}
    path = render.PATHS["encryption_config"]
    on = {name for name, f in files.items() if path in f}
    assert on == {h.name for h in inv.masters}
    assert len({files[m][path].content for m in on}) == 1
    f = files[inv.masters[0].name][path]
    assert f.mode == 0o600 and f.owner == "root"


def test_encryption_config_validates_structurally(site, inv):
    doc = yaml.safe_load(enc_file(site, inv, "k8s-master2").content)
    assert (doc["kind"], doc["apiVersion"]) == ("EncryptionConfig", "v1")  # what 1.10's flag reads
    (res,) = doc["resources"]
    assert res["resources"] == ["secrets"]
    aescbc, identity = res["providers"]
    assert identity == {"identity": {}}  # reads the secrets written before encryption was on
    (k,) = aescbc["aescbc"]["keys"]
    assert k["name"] == render.ENCRYPTION_KEY_NAME
    assert base64.b64decode(k["secret"], validate=True) == base64.b64decode(site.encryption_key())
    assert len(base64.b64decode(k["secret"])) == 32


def test_a_damaged_encryption_key_is_an_error_not_a_new_key(site, inv):
    key = site.dir / pki.ENCRYPTION_KEY
    key.write_bytes(b"c2hvcnQ=\n")
    with pytest.raises(pki.Error) as e:
        site.ensure(inv)
    assert "32-byte" in e.value.message and "backup" in e.value.hint
    assert key.read_bytes() == b"c2hvcnQ=\n"  # left as found
    key.unlink()
    with pytest.raises(pki.Error):
        pki_material.material_for(site, inv, inv.host("k8s-master1"))


def test_the_key_never_reaches_bundle_inputs(site, inv):
    """Only the state directory holds it: templates alone render no key, and bundler never reads the state."""
    secret = site.encryption_key()
    plain = render.render_all(inv, pki_files={})  # what a render without the site's PKI produces
    assert all(render.PATHS["encryption_config"] not in files for files in plain.values())
    assert not any(secret.encode() in f.content for files in plain.values() for f in files.values())
    for src in sorted((ROOT / "bundler").rglob("*.py")):
        text = src.read_text()
        assert pki.ENCRYPTION_KEY not in text and "installer.pki" not in text, src
    holders = [p.name for p in site.state_dir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert holders == [pki.ENCRYPTION_KEY]


# ------------------------------------------------------------------ the stand-ins accept it

@pytest.fixture(scope="module")
def rt():
    from tests.fixtures import standins
    from tests.fixtures.standins import _runtime

    _runtime._FLAG_TABLES = standins.flag_tables()  # what the generated header defines
    return _runtime


@pytest.mark.parametrize("component", sorted(ENV_FILES))
def test_the_standins_parse_every_rendered_flag(rt, component):
    for host in hosts_with(ENV_FILES[component][0]):
        argv = [f"{k}={v}" for k, v in flags_of(host, component).items()]
        parsed = rt.parse_pflag(rt.load_table(component), argv, warn=lambda m: None)
        assert parsed.args == [] and len(parsed.changed) == len(argv), (component, host)


def test_the_standin_apiserver_reads_the_rendered_config_files(rt, site, inv):
    """Its YAML subset reads what --experimental-encryption-provider-config and the admission files hold."""
    files = render.render_host(inv, "k8s-master1", pki_files=pki_material.material_for(site, inv, inv.host("k8s-master1")))
    kinds = {"encryption_config": "EncryptionConfig", "admission_config": "AdmissionConfiguration",
             "eventratelimit_config": "Configuration", "audit_policy": "Policy"}
    for name, kind in kinds.items():
        text = files[render.PATHS[name]].content.decode()
        assert rt.parse_document(text) == yaml.safe_load(text) and yaml.safe_load(text)["kind"] == kind, name
