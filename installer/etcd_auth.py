"""etcd v3 authentication by client-certificate CN: only kube-apiserver and etcdctl on the etcd hosts are users.

Why: etcd trusts one CA (the etcd CA) and checks client certificates, but with authentication off every
certificate of that CA is a full v3 client; flanneld's, which lives on every node, could read and write all of
/registry. With authentication on, etcd takes the CN of the client certificate as the user name; the users
are installer.etcd_users.USERS (each with the root role) and nobody else, so flanneld's certificate (CN
"flanneld"), the control host's health-check certificate and the members' server certificates (CN = host
name) read and write nothing through v3. flanneld 0.10 keeps its network in the v2 API, whose store is
separate from v3's and holds nothing but flannel's prefix (`cluster.flannel_prefix`, seed 003's key); v2 has
no authentication here, so flanneld keeps that one prefix and gets nothing else.

How apply knows: on every etcd host the facts script runs two reads (installer.facts probes): one with the
member's own certificate, one with the etcd-admin certificate. Authentication is on when the admin read
works and the member's is refused; off when both work; unknown otherwise (etcd not running, no etcdctl or
admin certificate yet). The step is planned unless some member says "on" and none says "off".

How it is turned on (the step, over SSH on one member, with the etcd-admin certificate): every user of
USERS is created if missing, with a random password that is never kept (they authenticate by certificate;
root's is needed only because etcd refuses `auth enable` without a root user), granted the root role, then
`etcdctl auth enable`. Every command is idempotent, so a re-run after a failure completes it.

`installer check` presents flanneld's certificate to etcd's v3 API on a member (etcdctl there, the
certificate sent over stdin into a private temporary file that is removed afterwards): the read must be
refused while the same read with the etcd-admin certificate works.
"""

from __future__ import annotations

import shlex
from typing import Dict, List, Optional, Sequence, Tuple

from contract.errors import Error
from installer import etcd_users
from installer.etcd_backup import OnMember
from installer.facts import Facts
from installer.inventory import Host, Inventory
from installer.plan_model import Phase, Step, StepKind, Wave

PHASE = "etcd-auth"
STEP_KIND = StepKind.ETCD_AUTH
TARGET = "v3 authentication"
PROBE_MEMBER = "etcd-auth-member"
PROBE_ADMIN = "etcd-auth-admin"
CHECK = "etcd v3 authentication"
PROBE_KEY = "/registry/"
TIMEOUT = 120.0


def etcdctl(on: OnMember, address: str, cert: str, key: str, *args: str) -> str:
    """One etcdctl v3 command line against the client URL of a member (or of several: address may be a
    comma-separated list); sh syntax, args quoted."""
    q = shlex.quote
    endpoints = ",".join(f"https://{a}:2379" for a in address.split(","))
    return " ".join([
        "env", "ETCDCTL_API=3", q(on.etcdctl), q(f"--endpoints={endpoints}"), q(f"--cacert={on.cacert}"),
        q(f"--cert={cert}"), q(f"--key={key}"), "--dial-timeout=3s", "--command-timeout=10s",
        *(q(a) for a in args)])


def _read(on: OnMember, address: str, cert: str, key: str) -> str:
    return etcdctl(on, address, cert, key, "get", "--prefix", "--keys-only", "--limit=1", PROBE_KEY)


def probes(host: Host, on: OnMember = OnMember()) -> List[Tuple[str, str]]:
    """The facts probes of an etcd host (none for other hosts): exit status 127 when it cannot tell."""
    if not host.has("etcd"):
        return []
    q = shlex.quote
    ready = f"[ -x {q(on.etcdctl)} ] && [ -r {q(on.admin_cert)} ] && [ -r {q(on.cert)} ] || exit 127; "
    return [(PROBE_MEMBER, ready + _read(on, host.address, on.cert, on.key)),
            (PROBE_ADMIN, ready + _read(on, host.address, on.admin_cert, on.admin_key))]


def state(facts: Optional[Facts]) -> Optional[bool]:
    """True: authentication on; False: off; None: cannot tell from these facts."""
    if facts is None:
        return None
    admin, member = facts.probes.get(PROBE_ADMIN), facts.probes.get(PROBE_MEMBER)
    if admin != 0 or member is None or member == 127:
        return None
    return member != 0


def phase(inv: Inventory, facts_of: Dict[str, Optional[Facts]], in_focus=lambda h: True) -> Phase:
    """The etcd-auth phase: one step on one member unless authentication is known to be on (members without
    facts, i.e. not in this plan, are left out)."""
    members = [h for h in inv.etcd_members if h.name in facts_of]
    seen = {h.name: state(facts_of.get(h.name)) for h in members}
    off = [n for n, v in seen.items() if v is False]
    if not members or (not off and any(v is True for v in seen.values())):
        return Phase(PHASE)
    target = next((h for h in members if h.name in off), members[0])
    if not in_focus(target):
        return Phase(PHASE)
    reason = (f"off on {', '.join(off)}" if off else "not known to be on (etcd not answering yet, or no "
              "etcd-admin certificate on the members)")
    users = ", ".join(etcd_users.USERS)
    return Phase(PHASE, (Wave((Step(target.name, STEP_KIND, TARGET, f"{reason} -> on, users {users}"),)),))


def enable_script(address: str, on: OnMember = OnMember()) -> str:
    """sh: create the users that are missing, grant them the root role, enable authentication."""
    e = etcdctl(on, address, on.admin_cert, on.admin_key)
    lines = ["set -e", f"e() {{ {e} \"$@\"; }}", "pw() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \\n'; }"]
    for user in etcd_users.USERS:
        u = shlex.quote(user)
        lines.append(f"e user get {u} >/dev/null 2>&1 || e user add \"{user}:$(pw)\" --interactive=false >/dev/null")
        lines.append(f"e user grant-role {u} {shlex.quote(etcd_users.ROOT_ROLE)} >/dev/null")
    lines.append("e auth enable")
    return "\n".join(lines) + "\n"


def enable(conn, host: Host, on: OnMember = OnMember()) -> str:
    """Run the step on one member; the summary for the journal."""
    r = conn.run(enable_script(host.address, on), timeout=TIMEOUT, check=False)
    if r.rc != 0:
        raise Error(f"{host.name}: turning on etcd v3 authentication failed (exit status {r.rc})",
                    context="enabling etcd authentication (users by certificate CN)",
                    details=(r.stderr.strip() or r.stdout.strip()).splitlines()[-5:],
                    hint=f"check etcd on {host.name} (installer check); every command is idempotent, so the next "
                         "apply completes what this one began")
    return f"on; users {', '.join(etcd_users.USERS)} (root role)"


# ------------------------------------------------------------------ installer check


def _check_script(address: str, on: OnMember) -> str:
    """sh: the same read with flanneld's certificate (from stdin, PEM cert + key) and with the admin one."""
    return "\n".join([
        "d=$(mktemp -d) || exit 125", "trap 'rm -rf \"$d\"' EXIT", "umask 077", "cd \"$d\" || exit 125",
        "cat > c.pem",  # Go's key-pair loader takes the certificate and the key from the same PEM file
        f"{_read(on, address, 'c.pem', 'c.pem')} >/dev/null 2>&1; echo \"flanneld $?\"",
        f"{_read(on, address, on.admin_cert, on.admin_key)} >/dev/null 2>&1; echo \"admin $?\"",
    ]) + "\n"


def _rcs(text: str) -> Dict[str, int]:
    out = {}
    for line in text.splitlines():
        name, _, rc = line.strip().partition(" ")
        if rc.isdigit():
            out[name] = int(rc)
    return out


def check(inv: Inventory, pki, connector_for, members: Optional[Sequence[Host]] = None,
          on: OnMember = OnMember()) -> list:
    """[Result]: flanneld's etcd certificate must be refused by the v3 API of the first member that answers."""
    from installer.checks import Result  # checks imports this module

    members = list(inv.etcd_members if members is None else members)
    if not members:
        return []
    crt, key = pki.read("etcd-client-flanneld")
    tried = []
    for m in members:
        try:
            r = connector_for(inv, m).run(_check_script(m.address, on), input=crt + key, timeout=60, check=False)
        except Error as e:
            tried.append(f"{m.name}: {e.message}")
            continue
        rcs = _rcs(r.stdout)
        if rcs.get("admin") != 0:
            tried.append(f"{m.name}: etcdctl with the etcd-admin certificate failed (exit status "
                         f"{rcs.get('admin', r.rc)})")
            continue
        if rcs.get("flanneld") == 0:
            return [Result(CHECK, m.name, False, "flanneld's etcd certificate reads /registry through the v3 API: "
                                                 "authentication is off (installer apply turns it on)")]
        return [Result(CHECK, m.name, True, "on: flanneld's etcd certificate is refused by the v3 API")]
    return [Result(CHECK, members[0].name, False, "could not check: " + "; ".join(tried))]
