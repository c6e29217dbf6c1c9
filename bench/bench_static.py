"""Start-up time of the static installer executable against the venv's `installer`, and its size.

Both run the same commands in the same run: `--version` (start-up only) and `validate` of the example
inventory (imports pydantic and yaml, does real work). Prints the median of each, their ratio and the size.
The executable comes from bundler.static.ensure_static (built once, cached by source digest).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundler import static  # noqa: E402

CACHE = Path(os.environ.get("K8S_OFFLINE_STATIC_CACHE", "/var/tmp/k8s-offline-static-cache"))
VENV_INSTALLER = Path(sys.executable).parent / "installer"


def median_seconds(argv: list, repeat: int) -> float:
    """Median wall time of `argv` over `repeat` runs (after one warm-up run)."""
    subprocess.run(argv, check=True, capture_output=True)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
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
    print(f"{'command':<28} {'venv':>8} {'static':>8} {'static/venv':>12}")
    for label, tail in (("--version", ["--version"]), ("validate inventory", ["validate", inventory])):
        v = median_seconds([str(VENV_INSTALLER), *tail], args.repeat)
        s = median_seconds([str(exe), *tail], args.repeat)
        print(f"{label:<28} {v:>7.3f}s {s:>7.3f}s {s / v:>11.2f}x")
    print("(the static executable unpacks itself to /tmp on every start: staticx, then PyInstaller's onefile)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
