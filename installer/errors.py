"""Re-export of contract.errors (the one error type lives there now)."""
from contract.errors import *  # noqa: F401,F403
from contract.errors import (  # noqa: F401
    EXIT_FAILURE,
    EXIT_INTERNAL,
    EXIT_INVALID,
    DigestMismatch,
    Error,
    LocatedProblem,
    ValidationError,
    invalid,
    run,
)
