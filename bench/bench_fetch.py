"""Warm rebuild (everything cached) of the default spec vs `sha256sum` over the same cached bytes.

Prints ratios, asserts nothing. A warm `fetch` trusts a cached object by its name plus a size check:
the cache publishes a file under its hash only after verifying it, so re-hashing on every build would
only guard against someone editing the cache by hand (`Cache.verify` does that on demand; its cost is
printed as a second ratio). Goal: warm / sha256sum < 1.3.

Usage: .venv/bin/python bench/bench_fetch.py [--upstreams DIR] [--image-scale N] [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundler import fetch  # noqa: E402
from bundler import spec as specmod  # noqa: E402
from bundler.cache import Cache  # noqa: E402
from bundler.sources import http  # noqa: E402


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of `repeat` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstreams", help="run directory of stand-ins already `up` (default: start our own)")
    ap.add_argument("--image-scale", type=float, default=None, help="stand-in image layer scale")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=4)
    a = ap.parse_args(argv)

    from tests.fixtures import upstream

    stopped = False
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        ups = upstream.load(a.upstreams) if a.upstreams else upstream.start(Path(tmp) / "up",
                                                                            image_scale=a.image_scale)
        try:
            spec_path = ups.spec_file  # the project spec pinning the stand-ins' signing keys
            spec = specmod.load(spec_path, mirrors=ups.mirrors_file)
            session = http.make_session(a.jobs)
            session.trust_env = False
            cache = Cache(Path(tmp) / "cache")

            t0 = time.perf_counter()
            lk = fetch.lock(spec, spec_path, session, cache, jobs=a.jobs)
            t_lock = time.perf_counter() - t0
            t0 = time.perf_counter()
            cold = fetch.fetch(spec, lk, cache, session, jobs=a.jobs, locked=True)
            t_cold = time.perf_counter() - t0
            files = sorted({str(f.path) for f in cold.files})
            total = sum(Path(f).stat().st_size for f in files)

            ups.reset_stats()
            t_warm = timed(lambda: fetch.fetch(spec, lk, cache, session, jobs=a.jobs, locked=True), a.repeat)
            gets = sum(s.get("get", 0) for s in ups.stats().values())
            sha256sum = ["sha256sum", *files]
            t_sum = timed(lambda: subprocess.run(sha256sum, check=True, stdout=subprocess.DEVNULL), a.repeat)
            t_verify = timed(lambda: [cache.verify(f.sha256) for f in cold.files], a.repeat)
            t_offline = None
            if not a.upstreams:  # the same locked rebuild with every stand-in stopped: it must need no network
                ups.stop()
                stopped = True
                t_offline = timed(lambda: fetch.fetch(spec, lk, cache, session, jobs=a.jobs, locked=True,
                                                      check_upstream=False), 1)
        finally:
            if not a.upstreams and not stopped:
                ups.stop()

    print(f"default spec: {len(files)} cached objects, {total / 1e6:.1f} MB "
          f"(lock {t_lock:.2f}s, cold fetch {t_cold:.2f}s)")
    print(f"warm fetch (trust name + size):  {t_warm * 1000:8.1f} ms   GETs to the mirror: {gets}")
    if t_offline is not None:
        print(f"locked rebuild, stand-ins stopped: {t_offline * 1000:6.1f} ms   (no upstream answers: none was needed)")
    print(f"sha256sum over the same bytes:   {t_sum * 1000:8.1f} ms")
    print(f"re-verify every object (python): {t_verify * 1000:8.1f} ms")
    print(f"ratio warm / sha256sum     = {t_warm / t_sum:.3f}   (goal < 1.3)")
    print(f"ratio re-verify / sha256sum = {t_verify / t_sum:.3f}   (what hashing on every build would cost)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
