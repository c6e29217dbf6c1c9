"""Bundle size against `docker save | gzip` per image + gzip'd binaries, and peak RSS of build and verify.

Both measured in the same run from the same stand-in upstreams: the baseline is what the seeds do by hand
(one `docker save`-style tar per image, gzip'd, plus each release file gzip'd: `gzip -6` of its content, as
upstream ships it); ours is the same images and binaries written as one bundle (one OCI layout, each blob
once; release tarballs as plain tar in a level-19 long-window zstd frame, compressed blobs in a fast frame).
Peak RSS of `bundler build` and `installer verify` is measured for the default images and for images 10x
larger (goal: flat).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SIZE_GOAL = 0.40


def gz_size(data_iter) -> int:
    """Size of the gzip (level 6, like `gzip`) of a byte stream."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as g:
        for chunk in data_iter:
            g.write(chunk)
    return out.tell()


def docker_save_tar(layout: Path, manifest_digest: str) -> bytes:
    """A `docker save`-style tar of one image: manifest.json, config json, one uncompressed layer.tar each."""
    blobs = layout / "blobs" / "sha256"
    m = json.loads((blobs / manifest_digest.split(":")[1]).read_bytes())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))

        cfg_hex = m["config"]["digest"].split(":")[1]
        add(f"{cfg_hex}.json", (blobs / cfg_hex).read_bytes())
        layers = []
        for i, layer in enumerate(m["layers"]):
            raw = (blobs / layer["digest"].split(":")[1]).read_bytes()
            data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
            add(f"{i:03d}/layer.tar", data)
            layers.append(f"{i:03d}/layer.tar")
        add("manifest.json", json.dumps([{"Config": f"{cfg_hex}.json", "Layers": layers}]).encode())
    return buf.getvalue()


def top_manifests(layout: Path):
    """(ref, manifest digest) of every image, following an index to its amd64 manifest."""
    index = json.loads((layout / "index.json").read_text())
    for d in index["manifests"]:
        ref = d.get("annotations", {}).get("io.k8s-offline.ref", d["digest"])
        body = json.loads((layout / "blobs" / "sha256" / d["digest"].split(":")[1]).read_bytes())
        if "manifests" in body:
            amd = [m for m in body["manifests"] if m.get("platform", {}).get("architecture") == "amd64"]
            yield ref, amd[0]["digest"]
        else:
            yield ref, d["digest"]


def measured(cmd, cwd=None) -> tuple:
    """Run a command; return (seconds, peak RSS in MiB of the child)."""
    wrapper = ("import resource, subprocess, sys, time; t=time.monotonic(); "
               "r=subprocess.run(sys.argv[1:]); "
               "print('%f %d %d' % (time.monotonic()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
               "r.returncode))")
    out = subprocess.run([PY, "-c", wrapper, *cmd], cwd=cwd, capture_output=True, text=True)
    secs, rss, rc = out.stdout.strip().splitlines()[-1].split()
    if rc != "0":
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return float(secs), int(rss) / 1024


def run_scale(scale: float, work: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.upstream import start

    work.mkdir(parents=True, exist_ok=True)
    ups = start(work / "up", cache=Path(os.environ.get("UPSTREAM_CACHE", "/var/tmp/k8s-offline-upstream-cache")),
                image_scale=scale)
    try:
        shutil.copyfile(ups.spec_file, work / "bundle-spec.yaml")  # pins the stand-ins' signing keys
        bindir = Path(PY).parent
        if not (work / "keys" / "bundle.key").exists():
            subprocess.run([str(bindir / "bundler"), "keygen", "--out", str(work / "keys")], check=True,
                           capture_output=True)
        py = f"{sys.version_info.major}.{sys.version_info.minor}"
        common = ["--spec", str(work / "bundle-spec.yaml"), "--key", str(work / "keys" / "bundle.key"),
                  "--mirrors", str(ups.mirrors_file), "--cache", str(work / "cache"), "--pythons", py,
                  "--no-static"]  # the static executable is built once per sources, not per bundle
        subprocess.run([str(bindir / "bundler"), "build", *common, "--out", str(work / "warm")], check=True,
                       capture_output=True)  # fills the cache: the measured build is the assembly itself
        shutil.rmtree(work / "dist", ignore_errors=True)
        build_s, build_rss = measured([str(bindir / "bundler"), "build", *common, "--out", str(work / "dist"),
                                       "--locked"])
        bundle = next((work / "dist").glob("*.bundle.tar.zst"))
        verify_s, verify_rss = measured([str(bindir / "installer"), "verify", str(bundle), "--pub",
                                         str(work / "keys" / "bundle.pub")])
        site = work / "site"
        shutil.rmtree(site, ignore_errors=True)
        subprocess.run([str(bindir / "installer"), "unpack", str(bundle), "--pub", str(work / "keys" / "bundle.pub"),
                        "--dest", str(site)], check=True, capture_output=True)
        # baseline: docker save | gzip per image + gzip of each release file
        layout = site / "images"
        base_images = sum(gz_size([docker_save_tar(layout, dg)]) for _, dg in top_manifests(layout))
        base_bins = 0
        for f in sorted((site / "binaries").iterdir()):
            with open(f, "rb") as fh:
                base_bins += gz_size(iter(lambda: fh.read(1 << 20), b""))
        # ours: the same images and binaries as one bundle (same writer as bundler build)
        from contract.bundle import Entry, load_private_key, read_manifest, write_bundle

        manifest, _, _ = read_manifest(bundle)
        entries = [Entry(f.path, site / f.path, f.size, f.sha256, f.mode) for f in manifest.files
                   if f.path.startswith(("images/", "binaries/"))]
        key = load_private_key(work / "keys" / "bundle.key")

        def bundled_size(subset) -> int:
            with tempfile.TemporaryDirectory() as tmp:
                return write_bundle(tmp, "size", "1", subset, key, spec_sha256="0" * 64, lock_sha256="0" * 64,
                                    components={}).size

        ours = bundled_size(entries)
        ours_images = bundled_size([e for e in entries if e.path_in_bundle.startswith("images/")])
        return {"scale": scale, "bundle_bytes": bundle.stat().st_size, "payload_bytes": manifest.total_size,
                "ours_images_binaries": ours, "baseline": base_images + base_bins,
                "baseline_images": base_images, "baseline_binaries": base_bins, "ours_images": ours_images,
                "build_s": build_s, "build_rss_mib": build_rss, "verify_s": verify_s, "verify_rss_mib": verify_rss}
    finally:
        ups.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="1,10", help="image size scales to measure (comma list)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-size-"))
    t0 = time.monotonic()
    try:
        rows = [run_scale(float(s), work / f"s{s}") for s in args.scales.split(",")]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("bundle size and peak memory (baseline measured in the same run)")
    for r in rows:
        ratio = r["ours_images_binaries"] / r["baseline"]
        print(f"  scale {r['scale']:>4}: images+binaries {r['ours_images_binaries'] / 2**20:7.1f} MiB vs "
              f"docker-save|gzip + gzip {r['baseline'] / 2**20:7.1f} MiB  ratio {ratio:.2f} (goal <= {SIZE_GOAL})"
              f"  [whole bundle {r['bundle_bytes'] / 2**20:.1f} MiB]")
        print(f"              images only: {r['ours_images'] / 2**20:.1f} MiB vs docker-save|gzip "
              f"{r['baseline_images'] / 2**20:.1f} MiB  ratio {r['ours_images'] / r['baseline_images']:.2f}")
        print(f"              build {r['build_s']:.2f}s peak RSS {r['build_rss_mib']:.0f} MiB; "
              f"verify {r['verify_s']:.2f}s peak RSS {r['verify_rss_mib']:.0f} MiB "
              f"(payload {r['payload_bytes'] / 2**20:.1f} MiB)")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"  peak RSS growth x{b['payload_bytes'] / a['payload_bytes']:.1f} payload: build "
              f"{b['build_rss_mib'] / a['build_rss_mib']:.2f}x, verify {b['verify_rss_mib'] / a['verify_rss_mib']:.2f}x "
              f"(goal: flat, ~1.0x)")
    print(f"  ({time.monotonic() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
