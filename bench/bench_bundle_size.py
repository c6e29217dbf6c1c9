"""The bundle at release size: warm `bundler build` and `installer verify` against zstd/openssl in the same run.

The stand-in upstreams in their release-size profile (every release file and image at its real size, made of
real Go code: tests/fixtures/upstream/release_size.py) feed one cache-filling build (at a fast level: the
cache does not depend on it), then the measured warm build (`--locked`, the default compression). Its
payload, the bundle's own decompressed tar stream, is then compressed by the zstd CLI as a user would:
`zstd -19 --long=27 -T0` and `zstd -3 -T0`; and the bundle is verified by `installer verify` and by
`zstd -dc B | openssl dgst -sha256`. Every input is read once first, so all of them start from the page
cache. Goals: bundle within 1.05x the zstd -19 size in at most half its time; verify within 1.2x.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BIN = Path(PY).parent
SIZE_GOAL = 1.05  # bundle size / zstd -19 --long=27 size
TIME_GOAL = 0.5  # warm build time / zstd -19 --long=27 time
VERIFY_GOAL = 1.2  # installer verify time / zstd -dc | openssl dgst -sha256 time


def timed_shell(cmd: str) -> float:
    """Seconds a shell pipeline takes (fails loudly)."""
    t0 = time.monotonic()
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def timed(cmd: list) -> float:
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return time.monotonic() - t0


def warm(paths) -> None:
    """Read files once so every measurement starts from the page cache."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(8 << 20):
                pass


def run(work: Path, cache: Path, level: int = 0) -> dict:
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.upstream import start

    ups = start(work / "up", cache=cache, profile="release", log=lambda m: print(f"  upstreams: {m}", flush=True))
    try:
        shutil.copyfile(ups.spec_file, work / "bundle-spec.yaml")  # pins the stand-ins' signing keys
        if not (work / "keys" / "bundle.key").exists():
            subprocess.run([str(BIN / "bundler"), "keygen", "--out", str(work / "keys")], check=True,
                           capture_output=True)
        py = f"{sys.version_info.major}.{sys.version_info.minor}"
        common = ["--spec", str(work / "bundle-spec.yaml"), "--key", str(work / "keys" / "bundle.key"),
                  "--mirrors", str(ups.mirrors_file), "--cache", str(work / "cache"), "--pythons", py,
                  "--no-static"]
        t_fill = timed([str(BIN / "bundler"), "build", *common, "--out", str(work / "fill"), "--level", "1"])
        print(f"  cache filled ({t_fill:.0f}s)", flush=True)
        fill = next((work / "fill").glob("*.bundle.tar.zst"))
        payload = work / "payload.tar"
        subprocess.run(f"zstd -q -dc {fill} > {payload}", shell=True, check=True)
        shutil.rmtree(work / "fill")
        warm(p for p in (work / "cache").rglob("*") if p.is_file())
        dist = work / "dist"
        args = ["--level", str(level)] if level else []
        t_build = timed([str(BIN / "bundler"), "build", *common, "--out", str(dist), "--locked", *args])
        bundle = next(dist.glob("*.bundle.tar.zst"))
        print(f"  warm build {t_build:.1f}s", flush=True)
        warm([payload])
        out = work / "z.zst"
        t19 = timed_shell(f"zstd -q -19 --long=27 -T0 -c {payload} > {out}")
        s19 = out.stat().st_size
        print(f"  zstd -19 --long=27 -T0 {t19:.1f}s", flush=True)
        t3 = timed_shell(f"zstd -q -3 -T0 -c {payload} > {out}")
        s3 = out.stat().st_size
        out.unlink()
        warm([bundle])
        t_verify = timed([str(BIN / "installer"), "verify", str(bundle), "--pub", str(work / "keys" / "bundle.pub")])
        t_openssl = timed_shell(f"zstd -q -dc {bundle} | openssl dgst -sha256")
        return {"payload": payload.stat().st_size, "bundle": bundle.stat().st_size, "build_s": t_build,
                "z19_s": t19, "z19": s19, "z3_s": t3, "z3": s3, "verify_s": t_verify, "openssl_s": t_openssl}
    finally:
        ups.stop()


def report(r: dict) -> bool:
    """Print the table; whether every goal was met."""
    mib = 2 ** 20
    print(f"release-size bundle: payload {r['payload'] / mib:.0f} MiB (tar stream), {os.cpu_count()} cores")
    print(f"  {'':34s} {'seconds':>8s} {'MiB':>8s} {'size/z19':>9s} {'time/z19':>9s}")
    rows = (("bundler build (warm, --locked)", r["build_s"], r["bundle"]),
            ("tar | zstd -19 --long=27 -T0", r["z19_s"], r["z19"]), ("tar | zstd -3 -T0", r["z3_s"], r["z3"]))
    for name, secs, size in rows:
        print(f"  {name:34s} {secs:8.1f} {size / mib:8.1f} {size / r['z19']:9.3f} {secs / r['z19_s']:9.3f}")
    size_ok = r["bundle"] / r["z19"] <= SIZE_GOAL
    time_ok = r["build_s"] / r["z19_s"] <= TIME_GOAL
    verify_ratio = r["verify_s"] / r["openssl_s"]
    verify_ok = verify_ratio <= VERIFY_GOAL
    print(f"  {'installer verify':34s} {r['verify_s']:8.1f}   vs zstd -dc | openssl dgst -sha256 "
          f"{r['openssl_s']:.1f}s: {verify_ratio:.2f}x")
    print(f"  goals: size <= {SIZE_GOAL}x zstd -19 {'ok' if size_ok else 'MISSED'}; time <= {TIME_GOAL}x "
          f"{'ok' if time_ok else 'MISSED'}; verify <= {VERIFY_GOAL}x {'ok' if verify_ok else 'MISSED'}")
    return size_ok and time_ok and verify_ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--level", type=int, default=0, help="bundler build --level (default: the bundler's own)")
    ap.add_argument("--cache", default=os.environ.get("UPSTREAM_CACHE", "/var/tmp/k8s-offline-upstream-cache"),
                    help="the stand-in upstreams' build cache (the release-size profile is cached below it)")
    args = ap.parse_args(argv)
    for tool in ("zstd", "openssl"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: the baselines need it")
            return 1
    work = Path(tempfile.mkdtemp(prefix="bench-bundle-size-", dir="/var/tmp"))
    t0 = time.monotonic()
    try:
        r = run(work, Path(args.cache), args.level)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"  kept {work}")
    ok = report(r)
    print(f"  ({time.monotonic() - t0:.0f}s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
