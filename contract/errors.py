"""One error type for people (message, context, hint) and the one place that turns it into an exit code."""

from __future__ import annotations

import sys
import traceback
from typing import Callable, Iterable, Optional, Sequence, TextIO

EXIT_FAILURE = 1
EXIT_INVALID = 2  # bad input: spec, inventory, arguments
EXIT_INTERNAL = 70  # a bug: asks for --debug


class Error(Exception):
    """A failure a user can act on: what went wrong, while doing what, and what to try."""

    exit_code = EXIT_FAILURE

    def __init__(
        self,
        message: str,
        *,
        context: Optional[str] = None,
        hint: Optional[str] = None,
        details: Sequence[str] = (),
        exit_code: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.context = context
        self.hint = hint
        self.details = list(details)
        if exit_code is not None:
            self.exit_code = exit_code

    def render(self) -> str:
        lines = [f"error: {self.message}"]
        if self.context:
            lines.append(f"  while: {self.context}")
        lines.extend(f"  - {d}" for d in self.details)
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "error": self.message,
            "context": self.context,
            "hint": self.hint,
            "details": self.details,
            "exit_code": self.exit_code,
        }


class ValidationError(Error):
    """Input that does not validate; `details` holds every located problem at once."""

    exit_code = EXIT_INVALID


class DigestMismatch(Error):
    """Bytes that do not hash (or measure) to what was expected: a callers' branch on this, never on the text."""


class LocatedProblem:
    """One problem at a YAML path, e.g. `images[3].ref: not a valid image reference`."""

    __slots__ = ("path", "message", "hint")

    def __init__(self, path: str, message: str, hint: Optional[str] = None) -> None:
        self.path = path
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        return f"{text} (hint: {self.hint})" if self.hint else text

    def __repr__(self) -> str:
        return f"LocatedProblem({self.path!r}, {self.message!r})"


def invalid(what: str, source: str, problems: Iterable[LocatedProblem], hint: str) -> ValidationError:
    """Build the ValidationError for a document with located problems."""
    problems = list(problems)
    n = len(problems)
    return ValidationError(
        f"{source}: {n} problem{'s' if n != 1 else ''} in the {what}",
        context=f"validating {source}",
        details=[str(p) for p in problems],
        hint=hint,
    )


def run(
    func: Callable[[], object],
    *,
    debug: bool = False,
    as_json: bool = False,
    stderr: Optional[TextIO] = None,
) -> int:
    """Call func; map Error and unexpected exceptions to a printed message and an exit code."""
    import json

    err = stderr or sys.stderr
    try:
        func()
        return 0
    except Error as e:
        if debug:
            traceback.print_exc(file=err)
        if as_json:
            print(json.dumps(e.as_dict(), indent=2), file=err)
        else:
            print(e.render(), file=err)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; what was written so far is kept and a re-run resumes", file=err)
        return 130
    except Exception as e:  # a bug, not a user error: say so and how to see more
        if debug:
            traceback.print_exc(file=err)
        print(f"error: internal error: {type(e).__name__}: {e}", file=err)
        print("  hint: re-run with --debug for the traceback and report it", file=err)
        return EXIT_INTERNAL
