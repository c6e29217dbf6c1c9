"""Start-up time of the static installer executable against the venv's `installer`, and its size.

Both run the same commands in the same run: `--version` (start-up only) and `validate` of the example
inventory (imports pydantic and yaml, does real work). The static executable is timed twice: its first start
(an empty private cache: it unpacks itself there) and warm starts (the cache entry checked, then run), each
against a cache directory of this run (K8S_OFFLINE_INSTALLER_CACHE), never the user's. Prints medians, the
warm/venv ratio and the size. The executable comes from bundler.static.ensure_static (cached by source digest).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundler import static  # noqa: E402

CACHE = Path(os.environ.get("K8S_OFFLINE_STATIC_CACHE", "/var/tmp/k8s-offline-static-cache"))
VENV_INSTALLER = Path(sys.executable).parent / "installer"


def median_seconds(argv: list, repeat: int, env: dict, before=None) -> float:
    """Median wall time of `argv` over `repeat` runs, after one warm-up run; `before()` runs before each."""
    subprocess.run(argv, check=True, capture_output=True, env=env)
    times = []
    for _ in range(repeat):
        if before:
            before()
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    reason = static.unavailable()
    if reason:
        print(f"skipped: cannot build the static installer here: {reason}")
        return 0
    t0 = time.monotonic()
    exe = static.ensure_static(CACHE, log=print)
    print(f"static executable: {exe} ({time.monotonic() - t0:.1f} s to build or find in the cache)")
    print(f"size: {exe.stat().st_size / 1e6:.1f} MB")
    inventory = str(ROOT / "inventory.example.yaml")
    cache = Path(tempfile.mkdtemp(prefix="bench-static-"))  # 0700, ours: what the launcher asks of its cache
    env = dict(os.environ, K8S_OFFLINE_INSTALLER_CACHE=str(cache))

    def empty_cache() -> None:
        for p in cache.iterdir():
            shutil.rmtree(p)

    try:
        print(f"{'command':<20} {'venv':>8} {'static first':>13} {'static warm':>12} {'warm/venv':>10}")
        for label, tail in (("--version", ["--version"]), ("validate inventory", ["validate", inventory])):
            v = median_seconds([str(VENV_INSTALLER), *tail], args.repeat, env)
            first = median_seconds([str(exe), *tail], args.repeat, env, before=empty_cache)
            warm = median_seconds([str(exe), *tail], args.repeat, env)
            print(f"{label:<20} {v:>7.3f}s {first:>12.3f}s {warm:>11.3f}s {warm / v:>9.2f}x")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print("(first: an empty cache, the executable unpacks itself into it; warm: the cached copy's sha256s are"
          " checked, then it runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
