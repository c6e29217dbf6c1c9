"""The facts script on a host with release-size executables: first run (hashes, writes the cache) vs cached.

Makes a tmp dir with about --mib MiB of files named and sized in proportion to a v1.10.3 master's executables,
plus small config files, waits until their ctime is old enough to be cached (facts_hashes.RACY_SECONDS), then
runs the whole facts script with `sh` on them: without a cache (every file hashed, as before the cache), the
first run with the cache, and the cached runs (median). Baselines of the same run: `sha256sum` of the same
files, and the script with no managed file. Goal: cached / no cache <= 0.2 (what is left is a stat and a cache
lookup per file, two short processes each, as the old script's sha256sum and stat of a small file cost).

Usage: .venv/bin/python bench/bench_facts.py [--mib 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from installer import facts, facts_hashes  # noqa: E402

GOAL = 0.2  # cached run / run without the cache
# MB of the v1.10.3 linux-amd64 executables a master holds (rounded); scaled to --mib
RELEASE = {"hyperkube": 220, "kube-apiserver": 210, "kube-controller-manager": 140, "kubelet": 150,
           "kube-proxy": 50, "kube-scheduler": 50, "kubectl": 55, "etcd": 17, "etcdctl": 15, "flanneld": 35}
CONFIGS = 30


def make_files(root: Path, mib: int) -> List[str]:
    block = os.urandom(1 << 20)
    scale = mib / sum(RELEASE.values())
    paths = []
    for name, mb in RELEASE.items():
        p = root / "bin" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("wb") as f:
            for i in range(max(1, round(mb * scale))):
                f.write(block[i % 251:] + block[:i % 251])  # rotated: not one MiB repeated
        p.chmod(0o755)
        paths.append(str(p))
    for i in range(CONFIGS):
        p = root / "etc" / f"conf-{i}.yaml"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"apiVersion: v1\nkind: Config\nindex: {i}\n" * 20)
        paths.append(str(p))
    return paths


def run_script(text: str) -> str:
    r = subprocess.run(["sh", "-c", text], capture_output=True, text=True, check=True)
    return r.stdout


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def files_of(text: str, paths: List[str]) -> Dict[str, Optional[facts.FileState]]:
    return dict(facts.parse(run_script(text), host="bench", managed_files=paths).files)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=512, help="total size of the executables (MiB)")
    ap.add_argument("--repeat", type=int, default=3, help="cached runs (the median is printed)")
    a = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-facts-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        paths = make_files(root, a.mib)
        total = sum(os.path.getsize(p) for p in paths)
        left = facts_hashes.RACY_SECONDS + 1 - (time.perf_counter() - t0)
        if left > 0:
            time.sleep(left)  # a file changed under RACY_SECONDS ago is never cached
        cache = str(root / "state" / "facts" / "hashes")
        plain = facts.script(paths, [], hash_cache=None)
        cached = facts.script(paths, [], hash_cache=cache)

        t_sum = timed(lambda: subprocess.run(["sha256sum", *paths], check=True, stdout=subprocess.DEVNULL))
        t_empty = timed(lambda: run_script(facts.script([], [])))
        want: Dict[str, Optional[facts.FileState]] = {}
        t_plain = timed(lambda: want.update(files_of(plain, paths)))
        got: List[Dict[str, Optional[facts.FileState]]] = []
        t_first = timed(lambda: got.append(files_of(cached, paths)))
        lines = len(Path(cache).read_text().splitlines())
        t_hits = []
        for _ in range(a.repeat):
            t_hits.append(timed(lambda: got.append(files_of(cached, paths))))
        t_hit = statistics.median(t_hits)

    same = all(g == want for g in got) and all(want.values())
    print(f"{len(paths)} managed files, {total / 1e6:.0f} MB ({len(RELEASE)} executables, {CONFIGS} configs); "
          f"cache: {lines} lines")
    print(f"sha256sum of the same files:        {t_sum * 1000:8.0f} ms")
    print(f"facts script, no managed file:      {t_empty * 1000:8.0f} ms")
    print(f"facts script, no cache:             {t_plain * 1000:8.0f} ms")
    print(f"facts script, first run with cache: {t_first * 1000:8.0f} ms   (hashes every file, writes the cache)")
    print(f"facts script, cached (median of {a.repeat}): {t_hit * 1000:7.0f} ms")
    print(f"per file when cached:               {(t_hit - t_empty) / len(paths) * 1000:8.1f} ms")
    print(f"ratio cached / first run  = {t_hit / t_first:.3f}")
    print(f"ratio cached / no cache   = {t_hit / t_plain:.3f}   (goal <= {GOAL})")
    print(f"same facts on every run: {'yes' if same else 'NO'}")
    return 0 if same and t_hit / t_plain <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
