"""A patch upgrade's delta bundle against the complete bundle, at release size: what an operator carries in.

The stand-in upstreams (release-size profile by default: every release file and image at its real size) serve
1.10.3 and the second stand-in release 1.10.4. 1.10.3 is built and unpacked as a site holds it (the
installer's state directory); the site's receipt is written from it (`installer receipt`'s bundle part); then
1.10.4 is built twice from the same lock and cache: complete, and as a delta `--since` the receipt. Printed:
both sizes and build times, the ratio, and the time `installer unpack --base` takes to combine the delta
with the unpacked 1.10.3 against unpacking the complete bundle. The combination must equal the complete
bundle unpacked, file for file (checked by the signed manifest's hashes as it is combined).
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
BIN = Path(sys.executable).parent
# delta size / complete size for a patch release: a patch replaces every Kubernetes executable (the two
# kubernetes tarballs are about a quarter of the compressed bundle at release size), so this is what the
# delta must beat by leaving out everything else; the carried bytes are printed against the payload too
GOAL = 0.35


def timed(cmd: list) -> float:
    t0 = time.monotonic()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return time.monotonic() - t0


def run(work: Path, cache: Path, profile: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from contract.receipt import Receipt
    from installer import receipt as receipt_mod
    from installer import site as site_mod
    from installer.state import StateDir
    from tests.fixtures.upstream import start

    ups = start(work / "up", cache=cache, profile=profile, log=lambda m: print(f"  upstreams: {m}", flush=True))
    try:
        subprocess.run([BIN / "bundler", "keygen", "--out", work / "keys"], check=True, capture_output=True)
        py = f"{sys.version_info.major}.{sys.version_info.minor}"

        def build(name: str, spec_source: Path, out: str, *extra) -> float:
            (work / name).mkdir(exist_ok=True)
            if not (work / name / "bundle-spec.yaml").exists():
                shutil.copyfile(spec_source, work / name / "bundle-spec.yaml")
            return timed([BIN / "bundler", "build", "--spec", work / name / "bundle-spec.yaml",
                          "--key", work / "keys" / "bundle.key", "--mirrors", ups.mirrors_file,
                          "--cache", work / "cache", "--pythons", py, "--no-static", "--out", work / out, *extra])

        build("old", ups.spec_file, "dist-old")
        old = next((work / "dist-old").glob("*.bundle.tar.zst"))
        state = StateDir(work / "state").ensure()
        site_mod.prepare_bundle(old, work / "keys" / "bundle.pub", state, lambda line: None)
        bundles, _ = receipt_mod.bundle_part(state)
        (work / "receipt.json").write_bytes(Receipt(created="2018-06-01T00:00:00Z", bundles=bundles).to_bytes())
        print("  1.10.3 built and unpacked; receipt written", flush=True)
        build("new", ups.spec_for("v1.10.4"), "fill", "--level", "1")  # fills the cache, writes the lock
        shutil.rmtree(work / "fill")
        t_full = build("new", ups.spec_for("v1.10.4"), "dist-full", "--locked")
        t_delta = build("new", ups.spec_for("v1.10.4"), "dist-delta", "--locked", "--since", work / "receipt.json")
        full = next((work / "dist-full").glob("*.bundle.tar.zst"))
        delta = next((work / "dist-delta").glob("*.delta-from-*.bundle.tar.zst"))
        base = Path(state.bundle_info()["dir"])
        pub = work / "keys" / "bundle.pub"
        t_unpack = timed([BIN / "installer", "unpack", full, "--pub", pub, "--dest", work / "u-full"])
        t_combine = timed([BIN / "installer", "unpack", delta, "--pub", pub, "--dest", work / "u-delta",
                           "--base", base])
        same = subprocess.run(["diff", "-r", "-q", work / "u-full", work / "u-delta"], capture_output=True)
        if same.returncode != 0:
            raise SystemExit(f"the combination differs from the complete bundle:\n{same.stdout.decode()[:2000]}")
        from contract import bundle as fmt

        info = fmt.inspect_bundle(delta)["delta"]
        return {"full": full.stat().st_size, "delta": delta.stat().st_size, "full_s": t_full, "delta_s": t_delta,
                "unpack_s": t_unpack, "combine_s": t_combine, "profile": profile,
                "carried": info["carried"], "from_base": info["from_base"]}
    finally:
        ups.stop()


def report(r: dict) -> bool:
    mib = 2 ** 20
    ratio = r["delta"] / r["full"]
    print(f"1.10.3 -> 1.10.4 patch ({r['profile']} profile, {os.cpu_count()} cores):")
    print(f"  complete 1.10.4 bundle   {r['full'] / mib:10.1f} MiB  built in {r['full_s']:6.1f}s  "
          f"unpacked in {r['unpack_s']:6.1f}s")
    print(f"  delta since the receipt  {r['delta'] / mib:10.1f} MiB  built in {r['delta_s']:6.1f}s  "
          f"combined with the base in {r['combine_s']:6.1f}s")
    c, b = r["carried"], r["from_base"]
    print(f"  the delta carries {c['files']} files, {c['bytes'] / mib:.1f} MiB uncompressed "
          f"({', '.join(sorted(c['kinds']))}); takes {b['files']} files, {b['bytes'] / mib:.1f} MiB from the base")
    ok = ratio <= GOAL
    print(f"  delta / complete: {ratio:.3f} (goal <= {GOAL}: {'ok' if ok else 'MISSED'}); the combination is "
          "the complete bundle, file for file")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="release", choices=("release", "small"))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--cache", default=os.environ.get("UPSTREAM_CACHE", "/var/tmp/k8s-offline-upstream-cache"))
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-delta-", dir="/var/tmp"))
    t0 = time.monotonic()
    try:
        r = run(work, Path(args.cache), args.profile)
    finally:
        if args.keep:
            print(f"  kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    ok = report(r)
    print(f"  ({time.monotonic() - t0:.0f}s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
