"""The pure helpers both CLIs share: printing data as text or JSON, and the error boundary of a command body.

Only these: contract/ has no command line and no processes (tests/unit/test_boundaries.py), so each program
builds its own typer app with --debug/--version (installer/cli_common.py `new_app`, bundler/cli.py `_new_app`;
the version lookup runs git). Their --debug callback calls `set_debug`, which `guarded` reads.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Optional

from contract.errors import run

_state = {"debug": False}


def set_debug(debug: bool) -> None:
    """Show tracebacks of errors from now on (the CLIs' --debug)."""
    _state["debug"] = debug


def guarded(func: Callable[[], Any], *, as_json: bool = False) -> None:
    """Run a command body; print Error nicely; exit with its code (SystemExit: never a traceback without
    --debug)."""
    code = run(func, debug=_state["debug"], as_json=as_json)
    if code:
        raise SystemExit(code)


def emit(data: Any, as_json: bool, text: Optional[Callable[[Any], str]] = None) -> None:
    """Print data for people, or as JSON for scripts."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    elif text is not None:
        sys.stdout.write(text(data).rstrip("\n") + "\n")
    else:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
