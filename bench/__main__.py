"""`make bench`: run every benchmark; each prints its ratios against a baseline measured in the same run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHES = [
    ("fetch: warm rebuild vs sha256sum of the cached bytes", ["bench/bench_fetch.py", "--repeat", "3"]),
    ("bundle: write/verify/unpack vs sha256sum, peak RSS", ["bench/bench_bundle.py", "--mib", "256"]),
    ("bundle size vs docker save|gzip, build/verify RSS small vs 10x", ["bench/bench_size.py"]),
    ("release-size bundle: warm build vs zstd -19/-3, verify vs zstd -dc | openssl",
     ["bench/bench_bundle_size.py"]),
    ("delta bundle of a 1.10.3 -> 1.10.4 patch vs the complete bundle, at release size", ["bench/bench_delta.py"]),
    ("seed: push_missing vs skopeo copy one by one", ["-m", "bench.bench_seed"]),
    ("static installer: start-up vs the venv entry point, size", ["bench/bench_static.py"]),
    ("facts: ~500 MB of managed files, first run vs hash cache", ["bench/bench_facts.py"]),
    ("apply: release size on 6 booted hosts vs scp (each file once, a changed byte caught), first and converged "
     "apply on 3, 12 and 24 hosts", ["bench/bench_apply.py"]),
]


def main() -> int:
    failed = []
    for title, args in BENCHES:
        print(f"\n### {title}", flush=True)
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, *args], cwd=ROOT, env={"PYTHONPATH": str(ROOT), **_env()})
        print(f"    ({time.monotonic() - t0:.0f}s, exit {r.returncode})", flush=True)
        if r.returncode != 0:
            failed.append(title)
    if failed:
        print("\nbenchmarks that missed a goal or failed: " + "; ".join(failed))
    return 1 if failed else 0


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


if __name__ == "__main__":
    sys.exit(main())
