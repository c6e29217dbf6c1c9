"""`installer check` over SSH: the pod network and image pulls, proven the way users' pods would use them.

Pod network, without the Kubernetes API: on every node a probe gets an address through that node's own CNI
configuration and plugins (podnet_probe.PROBE_SCRIPT, what kubelet does for a sandbox) and listens on TCP;
then every master and node, and every probe (pod to pod), must reach every probe within TIMEOUT. flanneld
must be active on every host that runs it (asked in the same command as the host's reach test): a stopped
flanneld keeps its routes (as the real one does) but no longer follows leases, so the next node's pods would be
unreachable. A failure names the pair, the route the
source uses and a hint. The probes are removed afterwards, also when a step fails.

Image pulls: every node pulls kubelet's pod-infra image (read from the node's own kubelet settings) through
its docker; a failure is classified (x509, unauthorized, not found) per node.
"""

from __future__ import annotations

import json
import shlex
import uuid
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from installer.checks import Result
from installer.hosts.connector import DEFAULT_PARALLEL, Connector, run_on
from installer.inventory import Host, Inventory
from installer.podnet_probe import PROBE_SCRIPT, REACH_SCRIPT
from installer.render import CNI_BIN_DIR, CNI_CONF_DIR, parse_env_file

PORT = 19999
TIMEOUT = 3
PROBE_TTL = 120  # the listener ends by itself even if the teardown never comes (the check was killed)
PYTHON = "P=$(command -v python3 || command -v python2 || command -v python) || " \
         "{ echo 'no python on the host' >&2; exit 3; }; "
KUBELET_ENV = "/etc/kubernetes/kubelet"

ConnectorFor = Callable[[Inventory, Host], Connector]


def _script(cmd: str, probe_id: str) -> str:
    args = " ".join(shlex.quote(a) for a in (cmd, probe_id, CNI_CONF_DIR, CNI_BIN_DIR, str(PORT), str(PROBE_TTL)))
    return PYTHON + f'exec "$P" - {args}'


def _json_line(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}


def _why(e: BaseException) -> str:
    return getattr(e, "message", None) or str(e)


FLANNELD_STATE = 'S=$(systemctl is-active flanneld); echo "flanneld $? $S"; '
FlanneldState = Union[Tuple[int, str], BaseException]  # (rc of `systemctl is-active`, its word), or the error


def _reach(conn: Connector, targets: Sequence[Tuple[str, str]], netns: Optional[str] = None,
           flanneld: bool = False) -> Tuple[Dict[str, str], Optional[Tuple[int, str]]]:
    """({probe node: '' if reached, else the route used}, flanneld's state when asked for it);
    netns runs the connects inside a probe namespace; flanneld asks systemd first, in the same command."""
    lines = "".join(f"{name} {ip} {PORT}\n" for name, ip in targets)
    reach = f'"$P" -c {shlex.quote(REACH_SCRIPT)} reach {TIMEOUT}'
    script = (FLANNELD_STATE if flanneld else "") + PYTHON + \
        (f"exec ip netns exec {shlex.quote(netns)} {reach}" if netns else f"exec {reach}")
    res = conn.run(script, timeout=TIMEOUT * 4 + 10, check=False, input=lines)
    got: Dict[str, str] = {}
    state: Optional[Tuple[int, str]] = None
    for line in res.stdout.splitlines():
        parts = line.split(" ", 2)
        if flanneld and len(parts) >= 2 and parts[0] == "flanneld" and parts[1].isdigit() and state is None:
            state = (int(parts[1]), parts[2].strip() if len(parts) > 2 else "")
        elif len(parts) >= 2 and parts[0] in ("ok", "fail"):
            got[parts[1]] = "" if parts[0] == "ok" else (parts[2] if len(parts) > 2 else "no route shown")
    for name, _ in targets:
        got.setdefault(name, f"no answer from the reach test ({res.stderr.strip()[:200] or res.rc})")
    return got, (state if state is not None else (-1, "no answer")) if flanneld else None


def pod_network(inv: Inventory, connector_for: ConnectorFor, max_parallel: int = DEFAULT_PARALLEL) -> List[Result]:
    """Probes on every node, reachability from every host and probe, flanneld state; probes removed after."""
    results: List[Result] = []
    nodes = list(inv.nodes)
    sources = [h for h in inv.hosts if h.has("master") or h.has("node")]
    conns = {h.name: connector_for(inv, h) for h in sources}
    probe_id = f"k8s-offline-probe-{uuid.uuid4().hex[:8]}"
    try:
        made = run_on(nodes, lambda h: conns[h.name].run(_script("add", probe_id), timeout=60, check=False,
                                                         input=PROBE_SCRIPT),
                      max_parallel)
        probes: Dict[str, str] = {}
        for h, r in made.items():
            if isinstance(r, BaseException):
                results.append(Result("pod network probe", h.name, False, _why(r)))
                continue
            doc = _json_line(r.stdout)
            if doc.get("ip"):
                probes[h.name] = doc["ip"]
                results.append(Result("pod network probe", h.name, True, f"{doc['ip']} via {doc.get('conf')}"))
            else:
                msg = doc.get("error") or (r.stderr.strip()[-300:] or f"exit {r.rc}")
                results.append(Result("pod network probe", h.name, False,
                                      f"{msg} (hint: the node's CNI config in {CNI_CONF_DIR}, plugins in "
                                      f"{CNI_BIN_DIR} and /run/flannel/subnet.env must all be there)"))
        targets = sorted(probes.items())
        if targets:  # the sources' reach tests also ask for flanneld's state (no round of its own)
            reach, flanneld = _reachability(inv, sources, conns, targets, probe_id, max_parallel)
            results += reach
        else:
            flanneld = _flanneld_states(sources, conns, max_parallel)
        results += _flanneld(sources, flanneld)
    finally:
        run_on(nodes, lambda h: conns[h.name].run(_script("del", probe_id), timeout=60, check=False,
                                                    input=PROBE_SCRIPT), max_parallel)
        for c in conns.values():
            c.close()
    return results


def _reachability(inv: Inventory, sources: Sequence[Host], conns: Dict[str, Connector],
                  targets: Sequence[Tuple[str, str]], probe_id: str,
                  max_parallel: int) -> Tuple[List[Result], Dict[str, FlanneldState]]:
    jobs: List[Tuple[str, Optional[str], Host]] = [(h.name, None, h) for h in sources]
    jobs += [(f"pod on {name}", probe_id, inv.host(name)) for name, _ in targets]  # pod to pod
    got = run_on(jobs, lambda j: _reach(conns[j[2].name], [t for t in targets if t[0] != j[2].name or not j[1]],
                                        netns=j[1], flanneld=j[1] is None), max_parallel)
    ips = dict(targets)
    out: List[Result] = []
    flanneld: Dict[str, FlanneldState] = {}
    bad = 0
    total = 0
    for (label, netns, host), r in got.items():
        if isinstance(r, BaseException):
            out.append(Result("pod network", f"{label} -> probes", False, _why(r)))
            if netns is None:
                flanneld[host.name] = r
            bad += 1
            continue
        reached, state = r
        if netns is None and state is not None:
            flanneld[host.name] = state
        for dst, route in sorted(reached.items()):
            total += 1
            if route:
                bad += 1
                out.append(Result("pod network", f"{label} -> pod on {dst}", False,
                                  f"TCP {ips[dst]}:{PORT} not reached within {TIMEOUT} s; {label} routes it: "
                                  f"{route.strip()} (hint: flanneld on both hosts, flannel.1 routes/FDB, "
                                  f"no second route for the pod subnet, FORWARD policy, UDP 8472 between hosts)"))
    if not bad:
        out.append(Result("pod network", f"{len(jobs)} sources -> {len(targets)} probes", True,
                          f"{total} TCP paths reached (hosts -> pods and pod -> pod across nodes)"))
    return out, flanneld


def _flanneld_states(sources: Sequence[Host], conns: Dict[str, Connector],
                     max_parallel: int) -> Dict[str, FlanneldState]:
    """flanneld's state on every source, in a round of its own (when there is no probe to reach)."""
    def ask(h: Host) -> Tuple[int, str]:
        r = conns[h.name].run("systemctl is-active flanneld", timeout=15, check=False)
        return r.rc, r.stdout.strip()

    got = run_on(sources, ask, max_parallel)
    return {h.name: r for h, r in got.items()}


def _flanneld(sources: Sequence[Host], states: Dict[str, FlanneldState]) -> List[Result]:
    out = []
    for h in sources:
        r = states.get(h.name, (-1, "no answer"))
        if isinstance(r, BaseException):
            out.append(Result("flanneld", h.name, False, _why(r)))
            continue
        rc, state = r
        state = state or "unknown"
        out.append(Result("flanneld", h.name, rc == 0, state if rc == 0 else
                          f"{state} (hint: `journalctl -u flanneld` on {h.name}; without it the host stops "
                          "following other nodes' subnets)"))
    return out


def classify_pull(output: str) -> str:
    """What a failed `docker pull` means, from docker's own words (its only interface for this)."""
    low = output.lower()
    if "x509" in low or "certificate" in low:
        return "x509: docker does not trust the registry certificate (check /etc/docker/certs.d/<registry>/ca.crt)"
    if "unauthorized" in low or "401" in low or "authentication required" in low:
        return "401 unauthorized: the project is private or the credentials are wrong"
    if "not found" in low or "manifest unknown" in low or "does not exist" in low:
        return "not found: the image is not in the site registry (run `installer seed`)"
    return "pull failed"


def pause_image(conn: Connector) -> Optional[str]:
    """kubelet's --pod-infra-container-image as the node has it, or None."""
    raw = conn.get(KUBELET_ENV)
    if raw is None:
        return None
    for word in parse_env_file(raw.decode(errors="replace")).get("KUBELET_ARGS", "").split():
        if word.startswith("--pod-infra-container-image="):
            return word.split("=", 1)[1]
    return None


def image_pulls(inv: Inventory, connector_for: ConnectorFor, max_parallel: int = DEFAULT_PARALLEL) -> List[Result]:
    """Every node's docker pulls the pause image it runs pods with, from the site registry."""
    def pull(h: Host) -> Result:
        conn = connector_for(inv, h)
        try:
            image = pause_image(conn)
            if not image:
                return Result("image pull", h.name, False, f"no --pod-infra-container-image in {KUBELET_ENV}")
            r = conn.run(["docker", "pull", image], timeout=120, check=False)
            if r.ok:
                return Result("image pull", h.name, True, f"{image} pulled")
            text = (r.stderr + r.stdout).strip()
            return Result("image pull", h.name, False, f"{image}: {classify_pull(text)}: {text[-300:]}")
        finally:
            conn.close()

    got = run_on(list(inv.nodes), pull, max_parallel)
    return [r if isinstance(r, Result) else Result("image pull", h.name, False, _why(r)) for h, r in got.items()]
