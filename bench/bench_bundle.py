"""Benchmark the bundle format: write, verify and unpack time against `sha256sum` of the same bytes."""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from contract.bundle import (
    Entry,
    generate_keypair,
    load_private_key,
    load_public_key,
    unpack_bundle,
    verify_bundle,
    write_bundle,
)

VERIFY_TARGET = 1.3  # verify time / sha256sum time


def make_sources(src: Path, mib: int) -> list[Entry]:
    """Half incompressible (like rpms and layers), half text-like (like binaries); 64 MiB files."""
    rnd = random.Random(1)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 12))) for _ in range(5000)]
    text = b" ".join(rnd.choice(words) for _ in range(200_000))[: 1 << 20]
    entries = []
    for i in range(max(1, mib // 64)):
        path = src / f"f{i}"
        digest = hashlib.sha256()
        with path.open("wb") as f:
            for j in range(min(64, mib)):
                block = os.urandom(1 << 20) if i % 2 else text[j:] + text[:j]
                f.write(block)
                digest.update(block)
        entries.append(Entry(f"binaries/f{i}" if i % 2 == 0 else f"rpms/f{i}.rpm", path, path.stat().st_size,
                             digest.hexdigest()))
    return entries


def timed(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def run(mib: int, workdir: Path, split_size: str | None = None) -> dict:
    """Build a bundle of about `mib` MiB and time each step; return the measurements."""
    src = workdir / "src"
    src.mkdir()
    entries = make_sources(src, mib)
    key_path, pub_path = generate_keypair(workdir / "keys")
    key, pub = load_private_key(key_path), load_public_key(pub_path)
    results = {}
    holder = {}
    results["write"] = timed(lambda: holder.setdefault("r", write_bundle(
        workdir / "out", "bench", "1", entries, key, spec_sha256="0" * 64, lock_sha256="0" * 64,
        components={}, split_size=split_size)))
    bundle = holder["r"].path
    files = [str(e.source_path) for e in entries]
    subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)  # warm the page cache for both
    results["sha256sum"] = timed(lambda: subprocess.run(["sha256sum", *files], stdout=subprocess.DEVNULL, check=True))
    results["verify"] = timed(lambda: verify_bundle(bundle, pub))
    results["unpack"] = timed(lambda: unpack_bundle(bundle, pub, workdir / "dest"))
    results["bytes"] = sum(e.size for e in entries)
    results["compressed"] = holder["r"].size
    results["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=512, help="uncompressed bundle size in MiB")
    parser.add_argument("--split", default=None, help="split size, e.g. 64M")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-bundle-"))
    try:
        r = run(args.mib, workdir, args.split)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    base = r["sha256sum"]
    print(f"bundle: {r['bytes'] / 2**20:.0f} MiB, compressed {r['compressed'] / 2**20:.0f} MiB")
    for step in ("write", "verify", "unpack"):
        print(f"{step:7s} {r[step]:7.2f}s  {r[step] / base:5.2f}x sha256sum ({base:.2f}s)")
    print(f"max rss {r['max_rss_mib']:.0f} MiB")
    ok = r["verify"] / base <= VERIFY_TARGET
    print(f"verify target <= {VERIFY_TARGET}x sha256sum: {'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
