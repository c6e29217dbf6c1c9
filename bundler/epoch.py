"""The one time a bundle records (manifest `created`, SBOM creation time, tar mtimes), never the build's clock.

SOURCE_DATE_EPOCH (https://reproducible-builds.org/specs/source-date-epoch/) when it is set, else the time the
lock recorded when `bundler lock` wrote it: the same lock, spec, keys and installer sources then give the
same bundle bytes on any host, at any time.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from typing import Mapping, Optional

from contract.bundle.manifest import format_created
from contract.errors import Error

VARIABLE = "SOURCE_DATE_EPOCH"
# the time of a lock written before locks recorded theirs (1980-01-01, as the installer wheel's zip entries)
UNRECORDED = "1980-01-01T00:00:00Z"
_DIGITS = re.compile(r"^[0-9]{1,11}$")


def source_date_epoch(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """SOURCE_DATE_EPOCH as an RFC 3339 UTC time, None when unset or empty; a malformed value is an error."""
    value = (os.environ if environ is None else environ).get(VARIABLE, "").strip()
    if not value:
        return None
    if not _DIGITS.match(value):
        raise Error(f"{VARIABLE}={value!r} is not a number of seconds since 1970-01-01 UTC",
                    context="choosing the time the bundle records",
                    hint=f"set it to an integer, e.g. {VARIABLE}=$(git log -1 --format=%ct), or unset it "
                         "(the lock's recorded time is used then)")
    return format_created(datetime.fromtimestamp(int(value), timezone.utc))


def lock_time(environ: Optional[Mapping[str, str]] = None, now: Optional[datetime] = None) -> str:
    """The time a new lock records: SOURCE_DATE_EPOCH, else the moment it is resolved."""
    return source_date_epoch(environ) or format_created(now or datetime.now(timezone.utc))


def bundle_time(lock_created: Optional[str], environ: Optional[Mapping[str, str]] = None) -> str:
    """The time a bundle records: SOURCE_DATE_EPOCH, else the lock's own time (fixed for older locks)."""
    return source_date_epoch(environ) or lock_created or UNRECORDED
