"""Make the ONE static executable: static/launcher (linked statically) + the PyInstaller onedir program + the
Debian glibc it runs with, as a payload the launcher unpacks once into its private cache (static/README.md).

    python3 static/pack.py LAUNCHER ONEDIR OUT

Payload, appended to the launcher: a manifest (one line per directory `d MODE 0 0 - PATH` and per file
`f MODE SIZE ZSIZE SHA256 PATH`, parents before children), then each file's bytes compressed with zlib in
manifest order, then a 96-byte trailer: b"K8SPAYL1", the manifest's offset and length and the offset of the
first compressed file (little-endian u64 each), and the KEY, the sha256 of the manifest in hex. The tree is
the onedir program (its bootloader and _internal/) with ld-linux-x86-64.so.2 and every glibc library its ELF
files need (as `ldd` on the build host resolves them) added to _internal/: the bootloader restarts itself
with LD_LIBRARY_PATH=_internal, so that is where the restarted process must find them. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

MAGIC = b"K8SPAYL1"
LOADER = "ld-linux-x86-64.so.2"
_SAFE = re.compile(r"^[^\s][^\n\r\x00]*$")  # every path component: one manifest line, the name its rest
_LDD = re.compile(r"^\s*(?:(\S+) => )?(/\S+) \(0x[0-9a-f]+\)$")


class PackError(Exception):
    """A build input the payload cannot carry (reported by static/build.sh, which then stops)."""


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def system_libraries(onedir: Path) -> dict:
    """{name in _internal/: host path} for every library outside the onedir that its ELF files load (glibc's)."""
    internal = onedir / "_internal"
    env = dict(os.environ, LD_LIBRARY_PATH=str(internal))
    found = {}
    for path in sorted(p for p in onedir.rglob("*") if p.is_file() and _is_elf(p)):
        r = subprocess.run(["ldd", str(path)], capture_output=True, text=True, env=env, check=False)
        if "not a dynamic executable" in r.stdout + r.stderr or "statically linked" in r.stdout:
            continue
        for line in r.stdout.splitlines():
            if "not found" in line:
                raise PackError(f"{path.relative_to(onedir)} needs a library the build host lacks: {line.strip()}")
            m = _LDD.match(line)
            if not m:
                continue
            lib = Path(m.group(2))
            if internal in lib.parents or onedir in lib.parents:
                continue
            name = LOADER if lib.name == LOADER else (m.group(1) or lib.name)
            found[name] = lib.resolve()
    if LOADER not in found:
        raise PackError(f"ldd names no {LOADER} for {onedir}: is it an x86-64 glibc build?")
    return found


def _mode(st: os.stat_result) -> int:
    return 0o755 if st.st_mode & 0o111 else 0o644


def tree(onedir: Path, libs: dict) -> list:
    """[(kind, relative path, source path or None)], parents before children, in byte order."""
    items = [("f", f"_internal/{name}", src) for name, src in libs.items()]
    for name in libs:
        if (onedir / "_internal" / name).exists():
            raise PackError(f"the onedir build already has _internal/{name}: the payload would carry it twice")
    for p in sorted(onedir.rglob("*")):
        rel = p.relative_to(onedir).as_posix()
        st = p.lstat()
        if stat.S_ISDIR(st.st_mode):
            items.append(("d", rel, None))
        elif stat.S_ISREG(st.st_mode):
            items.append(("f", rel, p))
        else:
            raise PackError(f"{p} is neither a file nor a directory: the payload carries only those")
    for _, rel, _ in items:
        if not all(_SAFE.match(part) and part not in (".", "..") for part in rel.split("/")):
            raise PackError(f"{rel}: a file name the manifest cannot carry (a line break, or a leading blank)")
    return sorted(items, key=lambda i: i[1].encode())


def write(launcher: Path, onedir: Path, out: Path) -> str:
    """Write launcher + payload to `out` (mode 0755); returns the payload's key."""
    onedir = onedir.resolve()
    program = onedir / onedir.name
    if not program.is_file() or not (onedir / "_internal").is_dir():
        raise PackError(f"{onedir} is not a PyInstaller onedir build named {onedir.name}")
    lines, blobs = [], []
    for kind, rel, src in tree(onedir, system_libraries(onedir)):
        if kind == "d":
            lines.append(f"d 0755 0 0 - {rel}\n")
            continue
        data = Path(src).read_bytes()
        blob = zlib.compress(data, 9)
        sha = hashlib.sha256(data).hexdigest()
        lines.append(f"f {_mode(Path(src).stat()):04o} {len(data)} {len(blob)} {sha} {rel}\n")
        blobs.append(blob)
    manifest = "".join(lines).encode()
    key = hashlib.sha256(manifest).hexdigest()
    head = launcher.read_bytes()
    moff = len(head)
    trailer = MAGIC + struct.pack("<QQQ", moff, len(manifest), moff + len(manifest)) + key.encode()
    assert len(trailer) == 96
    tmp = out.with_name(f".{out.name}.tmp.{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(head)
        f.write(manifest)
        for blob in blobs:
            f.write(blob)
        f.write(trailer)
    tmp.chmod(0o755)
    os.replace(tmp, out)
    return key


def main(argv: list) -> int:
    if len(argv) != 3:
        print("usage: pack.py LAUNCHER ONEDIR OUT", file=sys.stderr)
        return 2
    try:
        key = write(Path(argv[0]), Path(argv[1]), Path(argv[2]))
    except (PackError, OSError) as e:
        print(f"static/pack.py: error: {e}", file=sys.stderr)
        return 2
    print(f"static: payload key {key}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
