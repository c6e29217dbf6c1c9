"""Changing etcd's membership from the inventory: a host added to the `etcd` group joins the running cluster,
a host taken out of it leaves, one member per apply, every step behind a health gate.

The facts: the membership recorded in <state>/etcd-members.json (ControlState.etcd_members: the cluster as the
installer changed it last), the inventory's etcd group, each member's /health as the control host sees it
(ControlState.etcd_unhealthy, recorded members included) and the hosts' facts (etcd running, data present).

One change per run (`decide`): the inventory may differ from the record by several members (replacing h1 by h4
in one edit is a join and a leave); the plan makes one of them and lists the others as deferred ("the next
apply does it"). A join goes first, so the cluster never has fewer members than before while it changes (3 ->
4 -> 3 keeps one failure tolerated throughout; 3 -> 2 -> 3 would not), except when a leaving member is
unhealthy (a dead host: adding needs every member healthy) or a newcomer takes a leaving member's address
(its peer URL is still taken). Refused before anything is done: a name kept with another address (remove it,
apply, add it again), a newcomer that already holds etcd data, and a change whose members that must be
healthy are not, unless this run's etcd phase starts them (its gates then decide).

A join (`add_waves`), after the etcd phase:
  1. gate: every current member answers /health (members are counted in quorum from `member add` on);
  2. the newcomer's files and executables (its etcd server/peer certificate, etcd.conf, the unit), no start;
  3. on a running member: `etcdctl member add NAME --peer-urls=https://ADDRESS:2380`, unless an entry with that
     peer URL is already there (unstarted: added by an earlier run that stopped; started under its name: a
     member already); then the record includes it (a run that stops now is finished by the next one through
     installer.etcd_member's rejoin of a recorded member without data);
  4. on the newcomer: installer.etcd_member's join step (a runtime drop-in: ETCD_INITIAL_CLUSTER_STATE=existing
     and the recorded members as ETCD_INITIAL_CLUSTER), etcd started; gate: every member healthy.
A removal (`remove_waves`):
  1. gate: every member but the leaving one answers /health (quorum of the members that stay);
  2. on a running member that stays: `etcdctl member remove` of the entry with its name or peer URL (none
     left: an earlier run removed it);
  3. on the leaving host, if it answers over SSH: etcd stopped and disabled, the join drop-in removed, the data
     directory moved aside to /var/lib/etcd.removed-<UTC time> (never deleted), so it cannot come back as the
     old member; an unreachable host is reported as skipped;
  4. the record drops it; gate: every remaining member healthy.
Consumers follow from the inventory: kube-apiserver's --etcd-servers and flanneld's endpoints are rendered
from the etcd group, so the masters phase (one at a time, /healthz gate) and the flannel phase restart them.
The snapshot apply takes before any change to an etcd host (installer.etcd_backup.before_changes) comes first.

The rendered etcd.conf of a member that stays changes when the group does (ETCD_INITIAL_CLUSTER); `quiet`
keeps that from restarting it: etcd reads ETCD_INITIAL_CLUSTER and ETCD_INITIAL_CLUSTER_STATE only while its
data directory is empty (bootstrap), so a member that has data would restart for nothing, and a restart of
every member on each membership change is a roll the change does not need.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

from contract.errors import EXIT_INVALID, Error
from installer import etcd_member
from installer.etcd_auth import etcdctl
from installer.etcd_backup import OnMember
from installer.inventory import Inventory
from installer.plan_model import CONTROL, ControlState, Gate, HostState, Step, StepKind, Wave

PHASE = "etcd-membership"
CONF = "/etc/etcd/etcd.conf"
BOOTSTRAP_ONLY = ("ETCD_INITIAL_CLUSTER=", "ETCD_INITIAL_CLUSTER_STATE=")  # read only with an empty data dir
TIMEOUT = 120.0
ADD, REMOVE = "add", "remove"


class MembershipRefused(Error):
    """The inventory's etcd group cannot be applied to the running cluster now."""


@dataclass(frozen=True)
class Change:
    """The one membership change of this run."""

    kind: str  # ADD or REMOVE
    name: str
    address: str
    before: Tuple[Tuple[str, str], ...]  # (name, address) of the members before the change
    after: Tuple[Tuple[str, str], ...]
    via: str  # the running member etcdctl runs on
    later: Tuple[str, ...] = ()  # the changes left for the next applies, for people

    @property
    def peer_url(self) -> str:
        return etcd_member.peer_url(self.address)


def _running(st: Optional[HostState]) -> bool:
    u = ((st.facts.units or {}).get("etcd") if st is not None else None)
    return u is not None and u.running


def _refused(message: str, hint: str, exit_code: Optional[int] = None) -> MembershipRefused:
    return MembershipRefused(message, context="planning the etcd membership change", hint=hint + "; nothing was "
                             "changed", exit_code=exit_code)


def moved_members(recorded: Optional[Mapping[str, str]], inv: Inventory) -> Optional[MembershipRefused]:
    """The refusal of a member kept under its name at another address (pure: inventory and record), or None."""
    now = {m.name: m.address for m in inv.etcd_members}
    moved = [n for n in now if recorded and n in recorded and recorded[n] != now[n]]
    if not moved:
        return None
    what = ", ".join(f"{n} ({recorded[n]} -> {now[n]})" for n in moved)
    return _refused(f"etcd member {what} changed address: a member's peer URL is its identity", "take it out of "
                    "the etcd group and apply (it leaves), then add it back at its new address and apply again (it "
                    "joins)", EXIT_INVALID)


def refuse_moved_early(inventory_path, state_dir) -> None:
    """moved_members before apply loads the site: the PKI would otherwise reissue the moved member's
    certificates (and the apiserver's) in the state directory for an apply that is then refused."""
    from installer import inventory as inventory_mod
    from installer.state import StateDir

    state = StateDir(state_dir)
    recorded = state.etcd_members() if state.root.is_dir() else None
    refusal = moved_members(recorded, inventory_mod.load(inventory_path)) if recorded else None
    if refusal:
        raise refusal


def decide(inv: Inventory, states: Mapping[str, HostState], control: ControlState,
           starting: Set[str] = frozenset()) -> Optional[Change]:
    """The membership change of this run (None: the inventory's group is the recorded membership), or a
    MembershipRefused. `starting`: members this run's etcd phase (re)starts, whose health its gates decide."""
    recorded = dict(control.etcd_members)
    if not recorded:
        return None  # the cluster is formed by this run (or before the record existed): nothing to change
    refusal = moved_members(recorded, inv)
    if refusal:
        raise refusal
    now = {m.name: m.address for m in inv.etcd_members}
    joining = [n for n in now if n not in recorded]
    leaving = [n for n in recorded if n not in now]
    if not joining and not leaving:
        return None
    unhealthy = set(control.etcd_unhealthy or ())
    taken = {recorded[n] for n in leaving} & {now[n] for n in joining}
    first_leave = [n for n in leaving if n in unhealthy or recorded[n] in taken]
    if first_leave or not joining:
        kind, name = REMOVE, (first_leave or leaving)[0]
        after = {n: a for n, a in recorded.items() if n != name}
    else:
        kind, name = ADD, joining[0]
        after = dict(recorded, **{name: now[name]})
    later = [f"{n} joins" for n in joining if n != name] + [f"{n} leaves" for n in leaving if n != name]
    address = recorded[name] if kind == REMOVE else now[name]
    what = f"{name} ({address}) {'joining' if kind == ADD else 'leaving'} the etcd cluster"
    if not after:
        raise _refused(f"{what} would leave no member: {name} is the last one",
                       f"keep {name} in the etcd group until another member has joined; with no member running, "
                       "restore a snapshot instead (installer etcd restore)")
    must = [n for n in (recorded if kind == ADD else after)]
    sick = [n for n in must if n in unhealthy and n not in starting]
    if sick:
        raise _refused(f"{what} is not done: {', '.join(sick)} not healthy (etcd /health), and changing the "
                       f"membership now could lose quorum",
                       f"start or repair etcd on {', '.join(sick)} (systemctl status etcd; journalctl -u etcd), or "
                       f"put the etcd group back to {', '.join(recorded)} and apply first; then apply again")
    if kind == ADD:
        probe = states[name].facts.probes.get(etcd_member.PROBE_DATA) if name in states else None
        if probe == 0 and not _running(states.get(name)):
            raise _refused(f"{what} is not done: {name} already has etcd data ({etcd_member.DATA_DIR}/member) "
                           "that is not of a member of this cluster",
                           f"on {name}, move it aside (mv {etcd_member.DATA_DIR} {etcd_member.RETIRED_DIR}old) and apply again")
    via = next((n for n in (recorded if kind == ADD else after) if n in now and n not in unhealthy
                and _running(states.get(n)) and n != name), None)
    via = via or next((n for n in (recorded if kind == ADD else after) if n in now and n != name), None)
    if via is None:
        raise _refused(f"{what} is not done: no member that stays is in the inventory to run etcdctl on",
                       "keep at least one current member in the etcd group")
    return Change(kind, name, address, tuple(recorded.items()), tuple(after.items()), via, tuple(later))


def this_run(inv: Inventory, states: Mapping[str, HostState], control: ControlState, starting: Set[str],
             focus: bool = False, rejoining: Sequence[str] = ()) -> Tuple[Optional[Change], List[str]]:
    """The change this run makes (or None) and the plan's lines for those left to the next applies.

    A member that rejoins (installer.etcd_member) is a change of its own: the membership changes in the next
    run. add-node (focus) never changes the membership: refused when the inventory asks for it."""
    change = decide(inv, states, control, starting)
    if change is None:
        return None, []
    if focus:
        from installer.preflight import etcd_membership_problem

        raise _refused(f"the inventory changes the etcd membership "
                       f"({etcd_membership_problem(dict(control.etcd_members), inv)}): add-node changes no etcd member",
                       "run installer apply, which makes the change one member at a time", EXIT_INVALID)
    what = [f"{change.name} {'joins' if change.kind == ADD else 'leaves'}"] + list(change.later)
    if rejoining:
        return None, [f"etcd membership: {', '.join(what)} by the next apply (this run rejoins "
                      f"{', '.join(rejoining)} first: one membership change per run)"]
    if not change.later:
        return change, []
    return change, [f"etcd membership: {', '.join(change.later)} by the next apply (one member changes per "
                    f"run; this one: {what[0]})"]


def joined(inv: Inventory, recorded: Optional[Mapping[str, str]]) -> Inventory:
    """The inventory with the etcd role only on hosts that are recorded members (the cluster checks after an
    apply that deferred a join: that host is no member yet); the inventory itself when nothing is deferred."""
    if not recorded or all(m.name in recorded for m in inv.etcd_members):
        return inv
    hosts = tuple(h if not h.has("etcd") or h.name in recorded else
                  h.model_copy(update={"roles": tuple(r for r in h.roles if r != "etcd")}) for h in inv.hosts)
    return inv.model_copy(update={"hosts": hosts})


# ------------------------------------------------------------------ the etcd phase around a change


def cluster_names(inv: Inventory, change: Optional[Change], recorded: Mapping[str, str]) -> Tuple[str, ...]:
    """The members the etcd phase's gates wait for: the cluster as it is before this run's change (the
    inventory's group when nothing is recorded yet), in inventory order."""
    base = [n for n, _a in change.before] if change is not None else list(recorded)
    group = [m.name for m in inv.etcd_members]
    if not base:
        return tuple(group)
    return tuple([n for n in group if n in base] + [n for n in base if n not in group])


def quiet(steps: Sequence[Step], st: HostState, pending: Set[str]) -> List[Step]:
    """A member with data whose etcd.conf differs only in the bootstrap settings (ETCD_INITIAL_CLUSTER*, read only
    with an empty data directory) gets the file without restarting etcd for it (see the module docstring)."""
    put = next((s for s in steps if s.kind is StepKind.PUT and s.target == CONF and "etcd" in s.units), None)
    old = st.contents.get(CONF)
    if put is None or old is None or put.file is None or st.facts.probes.get(etcd_member.PROBE_DATA) != 0:
        return list(steps)

    def rest(b: bytes) -> List[str]:
        return [ln for ln in b.decode("utf-8", "replace").splitlines() if not ln.startswith(BOOTSTRAP_ONLY)]

    if rest(old) != rest(put.file.content):
        return list(steps)
    out = [dataclasses.replace(put, units=(), reason="content differs only in ETCD_INITIAL_CLUSTER (read only "
                               "while the data directory is empty): etcd is not restarted for it")
           if s is put else s for s in steps]
    others = any("etcd" in s.units for s in out if s is not put and s.kind in (StepKind.PUT, StepKind.BINARY))
    if others or "etcd" in pending or not _running(st):
        return out
    return [s for s in out if not (s.kind is StepKind.RESTART and s.target == "etcd")]


# ------------------------------------------------------------------ the waves of a change


def _pairs(members: Sequence[Tuple[str, str]]) -> Tuple[str, ...]:
    return tuple(f"{n}={a}" for n, a in members)


def _names(members: Sequence[Tuple[str, str]]) -> Tuple[str, ...]:
    return tuple(n for n, _a in members)


def _gate_before(change: Change) -> Step:
    must = change.before if change.kind == ADD else change.after
    why = (f"every etcd member answers /health before {change.name} joins (from `member add` on it counts in "
           "quorum)" if change.kind == ADD else
           f"every etcd member but {change.name} answers /health before it is removed (the quorum of those that stay)")
    return Step(CONTROL, StepKind.GATE, Gate.ETCD_MEMBERS_HEALTHY, why, items=_names(must), units=("etcd",))


def _gate_after(change: Change) -> Step:
    return Step(CONTROL, StepKind.GATE, Gate.ETCD_HEALTH, "every member answers /health over TLS",
                items=_names(change.after), units=("etcd",))


def _record(change: Change) -> Step:
    return Step(CONTROL, StepKind.ETCD_MEMBERS_RECORD, "etcd-members.json",
                f"the recorded membership follows: {', '.join(_names(change.after))}", items=_pairs(change.after))


def add_waves(change: Change, newcomer_steps: Sequence[Step], st: Optional[HostState]) -> Tuple[Wave, ...]:
    """The join's waves (module docstring). newcomer_steps: its etcd-phase steps (files, executables, enable)."""
    prepare = tuple(s for s in newcomer_steps if not (s.kind is StepKind.RESTART and s.target == "etcd"))
    waves = [Wave((_gate_before(change),))]
    if prepare:
        waves.append(Wave(prepare))
    waves.append(Wave((Step(change.via, StepKind.ETCD_MEMBER_ADD, change.name,
                            f"member add {change.name} --peer-urls={change.peer_url} (kept when an entry with that "
                            "peer URL is there)", command=add_script(change)),)))
    waves.append(Wave((_record(change),)))
    joined = st is not None and _running(st) and st.facts.probes.get(etcd_member.PROBE_DATA) == 0
    start: Tuple[Step, ...] = () if joined else (
        Step(change.name, StepKind.ETCD_JOIN, etcd_member.TARGET, "a new member: it starts with "
             "initial-cluster-state existing and the recorded members as its initial cluster"),
        Step(change.name, StepKind.RESTART, "etcd", "joins the cluster", command="systemctl restart etcd"))
    waves.append(Wave(start, (_gate_after(change),)))
    return tuple(waves)


def remove_waves(change: Change) -> Tuple[Wave, ...]:
    """The removal's waves (module docstring)."""
    return (Wave((_gate_before(change),)),
            Wave((Step(change.via, StepKind.ETCD_MEMBER_REMOVE, change.name,
                       f"member remove {change.name} (its entry by name or peer URL {change.peer_url})",
                       command=remove_script(change)),)),
            Wave((Step(change.name, StepKind.ETCD_MEMBER_RETIRE, "etcd", "no longer a member: etcd stopped and "
                       f"disabled, its data moved to {etcd_member.RETIRED_DIR}<UTC time> (if the host answers)",
                       command=retire_script()),)),
            Wave((_record(change),), (_gate_after(change),)))


def waves(change: Optional[Change], newcomer_steps: Sequence[Step], states: Mapping[str, HostState]) -> Tuple[Wave, ...]:
    if change is None:
        return ()
    if change.kind == ADD:
        return add_waves(change, newcomer_steps, states.get(change.name))
    return remove_waves(change)


# ------------------------------------------------------------------ the scripts (sh, run over SSH)


def _etcdctl_fn(addresses: Sequence[str], on: OnMember) -> str:
    return f"e() {{ {etcdctl(on, ','.join(addresses), on.admin_cert, on.admin_key)} \"$@\"; }}"


def add_script(change: Change, on: OnMember = OnMember()) -> str:
    """sh on a running member: member add unless an entry with the peer URL is there (idempotent)."""
    q = shlex.quote
    return "\n".join([
        "set -e", _etcdctl_fn([a for n, a in change.before if n != change.name], on),
        f"name={q(change.name)} peer={q(change.peer_url)}", etcd_member.reconfig_fns(),
        "list=$(e member list)",
        # `member list`: "ID, started|unstarted, NAME, PEER URLS, CLIENT URLS" (an unstarted entry has no name)
        "have=$(printf '%s\\n' \"$list\" | awk -F', ' -v p=\"$peer\" '$4 == p { print $2 \" \" $3 }')",
        "case \"$have\" in",
        "  '') add_member; echo \"added $name ($peer)\" ;;",
        "  unstarted*) echo \"$name: the unstarted entry with $peer is kept (added by an earlier run)\" ;;",
        "  \"started $name\") echo \"$name is a member already\" ;;",
        "  *) echo \"$peer belongs to another member: $have\" >&2; exit 3 ;;",
        "esac",
    ]) + "\n"


def remove_script(change: Change, on: OnMember = OnMember()) -> str:
    """sh on a member that stays: member remove of every entry with the name or peer URL (idempotent)."""
    q = shlex.quote
    return "\n".join([
        "set -e", _etcdctl_fn([a for _n, a in change.after], on),
        f"name={q(change.name)} peer={q(change.peer_url)}", etcd_member.reconfig_fns(),
        "list=$(e member list)",
        "ids=$(printf '%s\\n' \"$list\" | awk -F', ' -v n=\"$name\" -v p=\"$peer\" '$3 == n || $4 == p { print $1 }')",
        "[ -n \"$ids\" ] || { echo \"$name is not a member (removed by an earlier run)\"; exit 0; }",
        "for id in $ids; do remove_member \"$id\"; done",
        "echo \"removed $name (member id $(echo $ids))\"",
    ]) + "\n"


def retire_script() -> str:
    """sh on the removed member's host: stop and disable etcd, drop the join drop-in, move the data aside."""
    q = shlex.quote
    data = etcd_member.DATA_DIR
    return "\n".join([
        "systemctl disable --now etcd >/dev/null 2>&1 || true",
        f"rm -f {q(etcd_member.JOIN_DROPIN)} {q(etcd_member.JOIN_ENV)}",
        "systemctl daemon-reload",
        "if systemctl is-active -q etcd; then echo 'etcd is still active' >&2; exit 3; fi",
        f"if [ -d {q(data)} ] && [ -n \"$(ls -A {q(data)})\" ]; then",
        f"  {etcd_member.move_data('etcd stopped and disabled, its data moved to')}",
        "else echo 'etcd stopped and disabled (no data directory to move)'; fi",
    ]) + "\n"


def run(conn, s: Step, doing: str) -> str:
    """Run a membership step's script on its host; the summary for the journal (the script's last line)."""
    r = conn.run(s.command or "", timeout=TIMEOUT, check=False)
    if r.rc != 0:
        raise Error(f"{s.host}: {doing} failed (exit status {r.rc})", context=f"{doing} ({s.reason})",
                    details=(r.stderr.strip() or r.stdout.strip()).splitlines()[-5:],
                    hint="check the members (installer check; etcdctl member list); every step is idempotent: "
                         "apply again resumes the change")
    lines = r.stdout.strip().splitlines()
    return lines[-1] if lines else "done"


def retire(site, hosts, connector_for, s: Step) -> Tuple[bool, str]:
    """The retire step on the removed member's host: (done, detail); (False, why) when the host does not answer
    (it is no member any more either way). A host that left the inventory is reached by its host record."""
    from installer.inventory import Host

    own = None
    try:
        if s.host in {h.name for h in site.inv.hosts}:
            conn = hosts[s.host]
        else:
            known = site.state.hosts().get(s.host)
            if known is None:
                return False, (f"skipped: {s.host} is in no inventory and no host record: stop etcd there and move "
                               f"{etcd_member.DATA_DIR} aside before it is started again")
            conn = own = connector_for(site.inv, Host.model_validate(known))
        try:
            if hasattr(conn, "connect"):
                conn.connect()  # raises when the host does not answer
        except Error as e:
            detail = e.message + (f" ({'; '.join(e.details[-2:])})" if e.details else "")
            return False, (f"skipped: {s.host} did not answer ({detail}); stop etcd there and move "
                           f"{etcd_member.DATA_DIR} aside before it is started again")
        return True, run(conn, s, f"retiring etcd on {s.host}")
    finally:
        if own is not None:
            own.close()


def record(state, inv: Inventory, s: Step) -> str:
    """Write the recorded membership of the step; a host that left both etcd and the inventory loses the etcd
    role in the host record (remove-node then takes it)."""
    members: Dict[str, str] = dict(item.split("=", 1) for item in s.items)
    before = state.etcd_members() or {}
    state.set_etcd_members(members)
    gone = [n for n in before if n not in members and n not in {h.name for h in inv.hosts}]
    hosts = state.hosts()
    changed = False
    for n in gone:
        if n in hosts and "etcd" in (hosts[n].get("roles") or []):
            hosts[n] = dict(hosts[n], roles=[r for r in hosts[n]["roles"] if r != "etcd"])
            changed = True
    if changed:
        state.set_hosts(hosts)
    return "recorded: " + ", ".join(members)
