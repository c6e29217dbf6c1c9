"""What the installer's commands share: the typer app with --debug/--version, their common options, the default
state directory, progress on stderr, and the SSH connectors and executor collaborators built from the options."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional

import typer

from contract import cliutil
from contract.version import __version__, with_commit
from installer.hosts.connector import DEFAULT_PARALLEL
from installer.hosts.known_hosts import DEFAULT_MODE as DEFAULT_HOST_KEYS
from installer.hosts.known_hosts import MODES as HOST_KEY_MODES


def new_app(name: str, help_text: str) -> typer.Typer:
    """A typer app with the --debug and --version options (bundler/cli.py builds its own: no shared CLI code)."""
    app = typer.Typer(name=name, help=help_text, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})

    def _version(value: bool) -> None:
        if value:
            typer.echo(f"{name} {version_text()}")
            raise typer.Exit()

    @app.callback()
    def _root(
        debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
        version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                               help="Print the version and exit."),
    ) -> None:
        cliutil.set_debug(debug)

    return app


def version_text() -> str:
    """The version, with the commit it was built from when known (the static build's info, else git)."""
    try:
        from installer import _build_info  # only in the static executable: static/build.sh writes it

        return _build_info.VERSION_TEXT
    except ImportError:
        pass
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return __version__
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                           text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return __version__
    commit = r.stdout.strip()
    return with_commit(commit if r.returncode == 0 else None)


JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")


def default_state() -> Path:
    """The state directory when --state is not given."""
    import os

    env = os.environ.get("K8S_OFFLINE_STATE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/k8s-offline")
    return Path.home() / ".local" / "state" / "k8s-offline"


STATE = typer.Option(None, "--state", help="State directory on this control host: PKI, passwords, journal "
                     "(default $K8S_OFFLINE_STATE, /var/lib/k8s-offline as root, else ~/.local/state/k8s-offline).")

BUNDLE = typer.Option(..., "--bundle", "-b", help="The bundle file, its first (or any) part, or the parts' directory.")
PUB = typer.Option(..., "--pub", help="The signer's public key (bundle.pub, or bundle-p256.pub).")
INVENTORY = typer.Option(..., "--inventory", "-i", help="Inventory file.")
KNOWN_HOSTS = typer.Option(None, "--known-hosts", help="ssh known_hosts file to use (default: "
                           "<state>/known_hosts).")
HOST_KEYS = typer.Option(DEFAULT_HOST_KEYS, "--host-keys", metavar="|".join(HOST_KEY_MODES),
                         help="ssh host keys: accept-new learns the key of a host not yet in known_hosts on first "
                         "contact (printing its fingerprint) and refuses changed keys; strict also refuses hosts "
                         "not in known_hosts.")

JOBS = typer.Option(DEFAULT_PARALLEL, "--jobs", "-j", min=1, metavar="N",
                    help="How many hosts are handled at once (SSH sessions, each waiting on its host). An SSH "
                    "session is I/O bound, so the default is 4 per CPU of this control host, at least 4 and at "
                    "most 32.")


def out(line: str) -> None:
    import sys

    sys.stderr.write(line + "\n")  # one write: lines of hosts handled at once never interleave
    sys.stderr.flush()


def connectors(state: Path, known_hosts: Optional[Path], host_keys: str):
    """OpenSSH connectors checking host keys against --known-hosts or <state>/known_hosts."""
    from installer import apply as apply_mod
    from installer.state import StateDir

    path = known_hosts or StateDir(state).known_hosts_path
    return apply_mod.ssh_connectors(known_hosts=str(path), host_keys=host_keys, out=out)


def options(state: Path, known_hosts: Optional[Path], host_keys: str, jobs: int, checks: bool = True):
    """Executor collaborators for the commands: OpenSSH, a proxy-free session, progress on stderr, `jobs` hosts
    at once."""
    from installer import apply as apply_mod

    return apply_mod.Options(
        connector_for=connectors(state, known_hosts, host_keys),
        session=apply_mod.default_session(),
        out=out,
        max_parallel=jobs,
        checks=checks,
    )
