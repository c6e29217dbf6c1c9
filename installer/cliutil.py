"""What both typer CLIs share: --debug/--version, printing data as text or JSON, the error boundary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from installer import __version__
from installer.errors import run

_state = {"debug": False}


def new_app(name: str, help_text: str) -> typer.Typer:
    """A typer app with the shared --debug and --version options."""
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
        _state["debug"] = debug

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
    return f"{__version__} (commit {commit})" if r.returncode == 0 and commit else __version__


def guarded(func: Callable[[], Any], *, as_json: bool = False) -> None:
    """Run a command body; print Error nicely; exit with its code (never a traceback without --debug)."""
    code = run(func, debug=_state["debug"], as_json=as_json)
    if code:
        raise typer.Exit(code)


def emit(data: Any, as_json: bool, text: Optional[Callable[[Any], str]] = None) -> None:
    """Print data for people, or as JSON for scripts."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    elif text is not None:
        sys.stdout.write(text(data).rstrip("\n") + "\n")
    else:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
