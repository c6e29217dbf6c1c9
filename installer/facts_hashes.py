"""The facts script's "files" section, with a per-host cache of sha256 sums keyed by each file's identity.

Every apply reads the facts of every host, and those include the sha256 of every managed file. At release
size the managed executables (hyperkube, kube-apiserver, kubelet, ...) are hundreds of MB per host, so the
section keeps a cache on the host (HASH_CACHE, root's, 0600, its directory created 0700 when missing) with
one line per file:

    <sha256> <device> <inode> <size> <mtime> <ctime> <path>

(mtime and ctime as `stat` %y/%z print them in UTC, with nanoseconds). The script stats every file in one
`stat` call first; one awk pass names the files whose identity differs from their cached line's (or that
have none), one `sha256sum` call hashes just those, and a second awk pass over the same stat output prints
each file's line (the cached sum or the new one) and writes the new cache when a line changed (a file in
the cache's directory, 0600, then mv). So a converged host answers with a constant number of processes
(date, stat, awk twice), not several per file: at 100-250 managed files per host that was most of the facts
round trip.

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
  describes the link, not its target) or an unreadable cache all mean "hash the file", never "trust it". A
  missing `date` disables caching. Without awk, with a `stat` that lacks these formats, or with a path that
  is not plain (whitespace, quotes, backslashes: never one of the installer's), every file is hashed by a
  plain loop, one sha256sum per file.

The script is POSIX sh (bash as sh on CentOS 7 with coreutils 8.22, dash on Debian); it never fails the
facts run: any cache error is silent and costs only the hashing. `plan` passes update=False: it uses the
cache but never writes it (plan writes nothing to hosts).
"""

from __future__ import annotations

import re
import shlex
from typing import List, Optional, Sequence

from installer.hosts.connector import check_path

HASH_CACHE = "/var/lib/k8s-offline/facts/hashes"
RACY_SECONDS = 2  # a file changed this recently (by ctime) is hashed on every run until it is older

# %f (raw mode, hex: the file type), %a %U %G (printed), then the identity: %d %i %s, %Z (ctime seconds,
# for the racy rule), %y %z (three words each: date, time with nanoseconds, zone), and the path
STAT_FORMAT = "%f %a %U %G %d %i %s %Z %y %z"
STAT_FIELDS = 15  # with %n
PLAIN = re.compile(r"/[A-Za-z0-9._/+@:=,%~-]+")  # split on whitespace by sh and awk, printed as is by sha256sum

# input: the paths (one per line), "@@stat", the stat lines, ["@@sums", sha256sum's lines]
# M=need prints the paths to hash; M=out prints one line per path and, with T set, writes the new cache
# there when it differs from C's content (exit 10: move it into place)
_AWK = r"""
$0 == "@@stat" { part = 1; next }
$0 == "@@sums" { part = 2; next }
part == 0 { order[++n] = $0; next }
part == 1 { if (NF == NSTAT) st[$NF] = $0; next }
part == 2 { if (NF == 2 && length($1) == 64 && $1 !~ /[^0-9a-f]/) sum[$2] = $1; next }
END {
  C = ENVIRON["C"]; NOW = ENVIRON["NOW"]; T = ENVIRON["T"]; M = ENVIRON["M"]; NS = "\\.[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]$"
  if (C != "") {
    while ((getline l < C) > 0) {
      oldtxt = oldtxt l "\n"
      if (length(l) > 65 && substr(l, 65, 1) == " " && substr(l, 1, 64) !~ /[^0-9a-f]/) cached[substr(l, 65)] = substr(l, 1, 64)
    }
    close(C)
  }
  for (i = 1; i <= n; i++) {
    p = order[i]; line = "-"
    if (p in st) {
      split(st[p], f, " "); type = substr(f[1], 1, length(f[1]) - 3); id = ""; s = ""
      if (type == "8" && (f[5] f[6] f[7] f[8]) ~ /^[0-9]+$/ && f[10] ~ NS && f[13] ~ NS)
        id = f[5] " " f[6] " " f[7] " " f[9] " " f[10] " " f[11] " " f[12] " " f[13] " " f[14]
      if (id != "" && ((" " id " " p) in cached)) s = cached[" " id " " p]
      if (type == "8" || type == "a") {
        if (M == "need") { if (s == "") print p; continue }
        if (s == "" && (p in sum)) s = sum[p]
        if (s != "") {
          line = s " " f[2] " " f[3] " " f[4]
          if (id != "" && NOW != "" && f[8] + 0 <= NOW - RACY) newtxt = newtxt s " " id " " p "\n"
        }
      }
    }
    if (M == "out") print line
  }
  if (M == "out" && T != "" && newtxt != oldtxt) { fflush(); printf "%s", newtxt > T; close(T); exit 10 }
}
"""


def files_section(paths: Sequence[str], cache: Optional[str] = HASH_CACHE, update: bool = True) -> List[str]:
    """sh lines printing one line per path, in order: "<sha256> <mode> <owner> <group>", or "-" if not a file.

    cache: the hash cache's path on the host (None: hash every file, as without a cache); update: write it."""
    if not paths:
        return []
    q = shlex.quote
    files = " ".join(q(check_path(p)) for p in paths)
    loop = [  # one sha256sum per file, no cache: without awk or these stat formats, or for a path not plain
        f"for f in {files}; do",
        '  if [ -f "$f" ] && s=$(sha256sum -- "$f" 2>/dev/null) && o=$(stat -c \'%a %U %G\' -- "$f" 2>/dev/null)',
        "  then printf '%s %s\\n' \"${s%% *}\" \"$o\"; else echo -; fi",
        "done",
    ]
    if not all(PLAIN.fullmatch(p) for p in paths):
        return ["(", "set -f", *loop, ")"]
    c = q(check_path(cache)) if cache else "''"
    awk = q(_AWK.replace("NSTAT", str(STAT_FIELDS)).replace("RACY", str(RACY_SECONDS)))
    fmt = q(STAT_FORMAT)
    plist = q("\n".join(paths))
    return [
        "(",  # a subshell: set -f, umask and variables stay here
        "set -f",
        f"C={c}; W={1 if update and cache else 0}; P={plist}",
        f"if command -v awk >/dev/null 2>&1 && TZ=UTC0 stat -c {fmt} -- / >/dev/null 2>&1; then",
        "  NOW=$(date +%s 2>/dev/null); case $NOW in ''|*[!0-9]*) NOW=; esac",
        f"  st=$(TZ=UTC0 stat -c {q(STAT_FORMAT + ' %n')} -- {files} 2>/dev/null)",
        f"  need=$(printf '%s\\n@@stat\\n%s\\n' \"$P\" \"$st\" | M=need C=\"$C\" LC_ALL=C awk {awk})",
        '  sums=; [ -z "$need" ] || sums=$(sha256sum -- $need 2>/dev/null)',
        '  T=; if [ "$W" = 1 ] && [ -n "$C" ] && [ -n "$NOW" ] && [ ! -d "$C" ]; then',
        '    d=${C%/*}; [ -n "$d" ] || d=/',
        '    { [ -d "$d" ] || mkdir -p -m 0700 -- "$d"; } 2>/dev/null && [ -w "$d" ] && T="$C.$$"',
        "  fi",
        "  umask 077",
        "  printf '%s\\n@@stat\\n%s\\n@@sums\\n%s\\n' \"$P\" \"$st\" \"$sums\" |",
        f'    M=out C="$C" NOW="$NOW" T="$T" LC_ALL=C awk {awk}',
        '  if [ $? -eq 10 ] && [ -n "$T" ]; then mv -f -- "$T" "$C" 2>/dev/null || rm -f -- "$T"; fi',
        "else",
        *["  " + ln for ln in loop],
        "fi",
        ")",
    ]
