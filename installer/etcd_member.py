"""Replacing a dead etcd member: a recorded member whose host has no etcd data any more (re-installed, disk
replaced) rejoins the running cluster under its name, instead of starting a new cluster of its own.

When: the cluster was formed (etcd-members.json exists), the member's etcd does not run, another member runs,
and either the member's facts say its data directory holds no `member/` (the facts probe PROBE_DATA), or it
holds one but the running cluster's member list has no entry with the member's peer URL (it was removed, as
by a join that stopped after `member remove`, and etcd then started by hand or at boot: etcd refuses that data
for good, so it is moved to RETIRED_DIR<UTC time>, not deleted). One member per apply ("never two changes at
once"); a second one is planned by the next run.

How (the etcd phase, rolling, behind the gates): first a gate that every *other* member is healthy (removing
and adding a member of three leaves two that must both answer); then on the host itself, after its files and
executables are in place, the join step: with etcdctl and the etcd-admin certificate against the other members,
`member remove` of the entry with its name or peer URL that was started before (the identity whose data is
gone), `member add NAME --peer-urls` unless an unstarted entry with its peer URL is already there (a re-run
after a failure), and a runtime drop-in (/run, gone at the next boot) that starts etcd with
ETCD_INITIAL_CLUSTER_STATE=existing and the inventory's members as ETCD_INITIAL_CLUSTER (etcd reads both only
while its data directory is empty); then etcd is restarted on it and the all-members gate follows. The
recorded membership does not change: the same names at the same addresses.
"""

from __future__ import annotations

import shlex
from typing import Dict, List, Mapping, Optional, Sequence

from contract.errors import Error
from installer.etcd_auth import etcdctl
from installer.etcd_backup import OnMember
from installer.inventory import Host, Inventory
from installer.plan_model import ControlState, HostState, Step, StepKind

PROBE_DATA = "etcd-data"
DATA_DIR = "/var/lib/etcd"  # ETCD_DATA_DIR in etcd.conf.j2
RETIRED_DIR = DATA_DIR + ".removed-"  # + UTC time: where data no member of the cluster uses any more goes
JOIN_ENV = "/run/k8s-offline/etcd-join.env"
JOIN_DROPIN = "/run/systemd/system/etcd.service.d/50-k8s-offline-join.conf"
TARGET = "etcd cluster"
TIMEOUT = 120.0
# etcd's strict reconfiguration check refuses `member add`/`member remove` ("unhealthy cluster") until the
# member taking the request has been connected to every other one for 5 s (its HealthInterval), as right
# after a member restarted: the scripts try again, once a second, for up to RECONFIG_TRIES attempts
RECONFIG_TRIES = 30
RECONFIG_PAUSE = 1.0


def peer_url(address: str) -> str:
    """A member's peer URL (ETCD_INITIAL_ADVERTISE_PEER_URLS in etcd.conf.j2)."""
    return f"https://{address}:2380"


def probes(host: Host) -> list:
    """The facts probe of an etcd host: exit status 0 when its data directory holds a member, 1 when not."""
    return [(PROBE_DATA, f"[ -d {shlex.quote(DATA_DIR + '/member')} ]")] if host.has("etcd") else []


def _running(st: HostState) -> bool:
    u = (st.facts.units or {}).get("etcd")
    return u is not None and u.running


NO_DATA = ("no etcd data on this member: it rejoins the running cluster (member remove of its old entry, member "
           "add, initial-cluster-state existing)")


def _removed_data(address: str) -> str:
    return (f"its etcd data is of a member the cluster removed (no entry with {peer_url(address)} in the member "
            f"list): the data goes to {RETIRED_DIR}<UTC time> and it rejoins (member add, initial-cluster-state "
            "existing)")


def joiners(inv: Inventory, states: Mapping[str, HostState], control: ControlState) -> Dict[str, str]:
    """The member that rejoins in this run (at most one), by the rules in the module docstring: {name: why}."""
    if not control.etcd_recorded:
        return {}  # the cluster is formed by this run, not joined
    running = {m.name for m in inv.etcd_members if m.name in states and _running(states[m.name])}
    recorded = dict(control.etcd_members)
    for m in inv.etcd_members:
        st = states.get(m.name)
        if (recorded and m.name not in recorded) or st is None or m.name in running or not running - {m.name}:
            continue  # new in the etcd group (it joins: installer.etcd_membership), or nothing to rejoin
        data = st.facts.probes.get(PROBE_DATA)
        if data == 1:
            return {m.name: NO_DATA}
        if data == 0 and control.etcd_peers is not None and peer_url(m.address) not in control.etcd_peers:
            return {m.name: _removed_data(m.address)}
    return {}


def with_join(steps: Sequence[Step], host: Host, why: str = NO_DATA) -> List[Step]:
    """The host's etcd-phase steps with the join step right before etcd (re)starts."""
    join = Step(host.name, StepKind.ETCD_JOIN, TARGET, why)
    out = [s for s in steps if not (s.kind is StepKind.RESTART and s.target == "etcd")]
    return out + [join, Step(host.name, StepKind.RESTART, "etcd", "joins the cluster")]


def reconfig_fns() -> str:
    """sh defining add_member and remove_member ID, for scripts that define e() (etcdctl against running
    members) and $name $peer. Each attempt starts from a fresh `member list`, so an attempt whose answer was
    lost is not repeated: add_member is done when an unstarted entry with $peer is listed, remove_member when
    ID is not listed. After RECONFIG_TRIES failed attempts the script exits 1 with etcdctl's last error."""
    return "\n".join([
        "_tries=0",
        f"_again() {{ _tries=$((_tries + 1)); [ \"$_tries\" -lt {RECONFIG_TRIES} ] || "
        "{ printf '%s\\n' \"$1\" >&2; exit 1; }; " f"sleep {RECONFIG_PAUSE:g}; }}",
        "add_member() {",
        "  while :; do",
        "    if list=$(e member list 2>&1); then",
        "      printf '%s\\n' \"$list\" | awk -F', ' -v p=\"$peer\" '$2 == \"unstarted\" && $4 == p { f = 1 } "
        "END { exit !f }' && return 0",
        "      err=$(e member add \"$name\" --peer-urls=\"$peer\" 2>&1 >/dev/null) && return 0",
        "      _again \"$err\"",
        "    else _again \"$list\"; fi",
        "  done",
        "}",
        "remove_member() {",
        "  while :; do",
        "    if list=$(e member list 2>&1); then",
        "      printf '%s\\n' \"$list\" | awk -F', ' -v id=\"$1\" '$1 == id { f = 1 } END { exit !f }' || return 0",
        "      err=$(e member remove \"$1\" 2>&1 >/dev/null) && return 0",
        "      _again \"$err\"",
        "    else _again \"$list\"; fi",
        "  done",
        "}",
    ])


def move_data(said: str) -> str:
    """sh: DATA_DIR moved to RETIRED_DIR<UTC time> (never deleted), then `said` and where it went echoed."""
    q = shlex.quote
    return f"to={q(RETIRED_DIR)}$(date -u +%Y%m%dT%H%M%SZ); mv {q(DATA_DIR)} \"$to\"; echo \"{said} $to\""


def join_script(inv: Inventory, host: Host, on: OnMember = OnMember(),
                members: Optional[Mapping[str, str]] = None) -> str:
    """sh run on the joining host (see the module docstring). members: the recorded membership {name: address}
    (the cluster as it is, which etcd checks ETCD_INITIAL_CLUSTER against); the inventory's group without one."""
    q = shlex.quote
    members = dict(members) if members else {m.name: m.address for m in inv.etcd_members}
    members.setdefault(host.name, host.address)
    e = etcdctl(on, ",".join(a for n, a in members.items() if n != host.name), on.admin_cert, on.admin_key)
    peer = peer_url(host.address)
    cluster = ",".join(f"{n}={peer_url(a)}" for n, a in members.items())
    return "\n".join([
        "set -e",
        f"e() {{ {e} \"$@\"; }}",
        f"name={q(host.name)} peer={q(peer)}", reconfig_fns(),
        # `member list`: "ID, started|unstarted, NAME, PEER URLS, CLIENT URLS[, IS LEARNER]" (3.3 and 3.4)
        "list=$(e member list)",
        "old=$(printf '%s\\n' \"$list\" | awk -F', ' -v n=\"$name\" -v p=\"$peer\" '$2 == \"started\" && "
        "($3 == n || $4 == p) { print $1 }')",
        "for id in $old; do remove_member \"$id\"; done",
        "add_member",
        f"if [ -d {q(DATA_DIR + '/member')} ]; then systemctl stop etcd; "
        f"{move_data('the data of its removed member moved to')}; fi",
        f"mkdir -p {q(JOIN_ENV.rsplit('/', 1)[0])} {q(JOIN_DROPIN.rsplit('/', 1)[0])}",
        f"printf 'ETCD_INITIAL_CLUSTER_STATE=existing\\nETCD_INITIAL_CLUSTER=%s\\n' {q(cluster)} > {q(JOIN_ENV)}",
        f"printf '[Service]\\nEnvironmentFile=%s\\n' {q(JOIN_ENV)} > {q(JOIN_DROPIN)}",
        "systemctl daemon-reload",
    ]) + "\n"


def join(conn, inv: Inventory, host: Host, on: OnMember = OnMember(),
         members: Optional[Mapping[str, str]] = None) -> str:
    """Run the join step on the member's host; the summary for the journal."""
    r = conn.run(join_script(inv, host, on, members), timeout=TIMEOUT, check=False)
    if r.rc != 0:
        raise Error(f"{host.name}: re-adding it to the etcd cluster failed (exit status {r.rc})",
                    context=f"replacing etcd member {host.name} (its data is gone)",
                    details=(r.stderr.strip() or r.stdout.strip()).splitlines()[-5:],
                    hint="check the other members (installer check); the step is idempotent: the next apply "
                         "finds an entry it already added and goes on")
    return f"{host.name} is a member again (old entry removed, added with its peer URL); etcd starts next"
