"""The facts script's "files" section, with a per-host cache of sha256 sums keyed by each file's identity.

Every apply reads the facts of every host, and those include the sha256 of every managed file. At release
size the managed executables (hyperkube, kube-apiserver, kubelet, ...) are hundreds of MB per host, so the
section keeps a cache on the host (HASH_CACHE, root's, 0600, its directory created 0700 when missing) with
one line per file:

    <sha256> <device> <inode> <size> <mtime> <ctime> <path>

(mtime and ctime as `stat` %y/%z print them in UTC, with nanoseconds). For each file the script stats it
first; when the identity equals the cached line's, the cached sum is printed, else the file is hashed and
its line replaced. The cache is rewritten (a temp file in its directory, then mv) only when a line changed.

Why a changed byte is still caught:
- Any write to a file sets its mtime and ctime to the current time. mtime can be set back from user space
  (`touch -d`, utimensat), but ctime cannot: the kernel sets it on every write, chmod, chown, rename or link
  change, and no system call sets it to a chosen value (only changing the clock would). So content changed
  by any means changes the ctime in the identity, and the file is hashed again.
- A file replaced by another (the installer's own writes rename a temp file into place, as do package
  managers and most editors) has a new inode, and a new ctime.
- A write in the same clock tick as the stat would not move the timestamps (ctime has the kernel's coarse
  clock resolution, whole seconds on some file systems): a file whose ctime is less than RACY_SECONDS
  before the run is hashed but not cached, so its next run hashes it again (git's "racy" rule).
- The stat comes before the hash: a write during hashing leaves the cached line with the older identity.
- Only a line whose every field parses is used: a garbled, truncated or foreign line, a symlink (stat
  describes the link, not its target), a `stat` without these formats or an unreadable cache all mean
  "hash the file", never "trust it". A missing `date` disables caching; a missing awk means no cache hits.

The script is POSIX sh (bash as sh on CentOS 7 with coreutils 8.22, dash on Debian); it never fails the
facts run: any cache error is silent and costs only the hashing. `plan` passes update=False: it uses the
cache but never writes it (plan writes nothing to hosts).
"""

from __future__ import annotations

import shlex
from typing import List, Optional, Sequence

from installer.hosts.connector import check_path

HASH_CACHE = "/var/lib/k8s-offline/facts/hashes"
RACY_SECONDS = 2  # a file changed this recently (by ctime) is hashed on every run until it is older

_NS = "[0-9]" * 9
# %a %U %G (printed as before) then the identity: %d %i %s, %Z (ctime seconds, for the racy rule), %y %z
STAT_FORMAT = "%a %U %G %d %i %s %Z %y %z"
STAT_FIELDS = 13  # %y and %z are three words each: date, time with nanoseconds, zone


def files_section(paths: Sequence[str], cache: Optional[str] = HASH_CACHE, update: bool = True) -> List[str]:
    """sh lines printing one line per path, in order: "<sha256> <mode> <owner> <group>", or "-" if not a file.

    cache: the hash cache's path on the host (None: hash every file, as without a cache); update: write it."""
    q = shlex.quote
    files = " ".join(q(check_path(p)) for p in paths)
    c = q(check_path(cache)) if cache else "''"
    return [
        "(",  # a subshell: set -f, positional parameters and variables stay here
        "set -f",
        f"C={c}; W={1 if update and cache else 0}; nl='",
        "'",
        "now=$(date +%s 2>/dev/null); case $now in ''|*[!0-9]*) now=; esac",
        'old=; if [ -n "$C" ] && [ -f "$C" ]; then old=$(cat -- "$C" 2>/dev/null) || old=; fi',
        "new=",
        f"for f in {files}; do",
        '  if [ ! -f "$f" ]; then echo -; continue; fi',
        f"  st=$(TZ=UTC0 stat -c '{STAT_FORMAT}' -- \"$f\" 2>/dev/null) || st=",
        "  set -- $st",
        "  id=; s=",
        f'  if [ $# -eq {STAT_FIELDS} ] && [ -n "$C" ] && [ ! -L "$f" ]; then',
        '    case "$4$5$6$7" in *[!0-9]*) ;; *)',
        f'      case "$9 ${{12}}" in *.{_NS}" "*.{_NS}) id="$4 $5 $6 $8 $9 ${{10}} ${{11}} ${{12}} ${{13}}" ;; esac ;;',
        "    esac",
        "  fi",
        '  if [ -n "$id" ] && [ -n "$old" ]; then',
        # the cached sum only from a line that is exactly "<64 chars> <identity> <path>"
        '    s=$(K=" $id $f" LC_ALL=C awk \'BEGIN { k = ENVIRON["K"] } '
        'length($0) == 64 + length(k) && substr($0, 65) == k { print substr($0, 1, 64); exit }\' '
        '"$C" 2>/dev/null) || s=',
        "    case $s in *[!0-9a-f]*) s= ;; esac; [ ${#s} -eq 64 ] || s=",
        "  fi",
        '  if [ -z "$s" ]; then s=$(sha256sum < "$f" 2>/dev/null) && s=${s%% *} || s=; fi',
        "  case $s in *[!0-9a-f]*) s= ;; esac",
        '  if [ ${#s} -ne 64 ]; then echo -; continue; fi',
        f'  if [ $# -eq {STAT_FIELDS} ]; then o="$1 $2 $3"; else o=$(stat -c \'%a %U %G\' -- "$f" 2>/dev/null); fi',
        "  printf '%s %s\\n' \"$s\" \"$o\"",
        f'  if [ -n "$id" ] && [ -n "$now" ] && [ "$7" -le $((now - {RACY_SECONDS})) ]; then',
        '    new="$new${new:+$nl}$s $id $f"',
        "  fi",
        "done",
        'if [ "$W" = 1 ] && [ "$new" != "$old" ] && [ ! -d "$C" ]; then',
        '  d=${C%/*}; [ -n "$d" ] || d=/',
        '  { [ -d "$d" ] || mkdir -p -m 0700 -- "$d"; } 2>/dev/null &&',
        '  t=$(mktemp -- "$C.XXXXXX" 2>/dev/null) &&',
        '  { { printf \'%s\\n\' "$new" > "$t" && chmod 600 "$t" && mv -f -- "$t" "$C"; } || rm -f -- "$t"; } '
        "2>/dev/null",
        "fi",
        ")",
    ]
