"""Benchmark: seeding a layout with push_missing vs `skopeo copy` image by image, into empty real registries.

Prints (never asserts) both times, their ratio (goal <= 0.8) and the re-seed time when everything is present.
Run: python -m bench.bench_seed [--images 20] [--layer-mib 4] [--jobs 4] [--auth none|htpasswd|token] [--tls]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from installer.registry.client import RegistryClient
from installer.registry.seed import push_missing, seeded_refs
from tests.fixtures.harbor.layout import build_many
from tests.fixtures.harbor.registry import start_registry
from tests.fixtures.upstream import procs

PROJECT = "kubernetes"


def skopeo_copy_all(layout: Path, reg, refs: dict) -> None:
    """`skopeo copy --preserve-digests oci:LAYOUT:ref docker://...` for each image, one after the other."""
    flags = ["--dest-cert-dir", str(reg.cert_dir)] if reg.tls else ["--dest-tls-verify=false"]
    if reg.username:
        flags += ["--dest-creds", f"{reg.username}:{reg.password}"]
    for original, seeded in refs.items():
        subprocess.run(
            [
                "skopeo",
                "copy",
                "-q",
                "--preserve-digests",
                *flags,
                f"oci:{layout}:{original}",
                f"docker://{seeded}",
            ],
            check=True,
            env=procs.clean_env(),
            timeout=600,
        )


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--layer-mib", type=float, default=4.0)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--auth", choices=("none", "htpasswd", "token"), default="none")
    ap.add_argument("--tls", action="store_true")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-seed-") as tmp:
        tmp_path = Path(tmp)
        layout = tmp_path / "layout"
        build_many(layout, a.images, layer_size=int(a.layer_mib * 1024 * 1024))
        size = sum(f.stat().st_size for f in (layout / "blobs" / "sha256").iterdir())
        print(
            f"layout: {a.images} images, {size / 1e6:.1f} MB of blobs; auth={a.auth} tls={a.tls} jobs={a.jobs}"
        )
        kwargs = {"tls": a.tls, "auth": a.auth, "harbor_api": "2.0" if a.auth == "token" else None}
        with (
            start_registry(tmp_path / "ours", **kwargs) as ours,
            start_registry(tmp_path / "skopeo", **kwargs) as theirs,
        ):
            if a.auth == "token":
                from installer.registry.harbor import HarborAPI

                for reg in (ours, theirs):
                    HarborAPI(
                        reg.api_url,
                        reg.session(),
                        username=reg.username,
                        password=reg.password,
                        verify=str(reg.ca_file) if a.tls else True,
                    ).ensure_project(PROJECT)

            def client():
                return RegistryClient(ours.url, ours.session(), **ours.client_kwargs())

            t0 = time.monotonic()
            report = push_missing(layout, client(), PROJECT, jobs=a.jobs)
            t_ours = time.monotonic() - t0
            print(f"push_missing (empty registry): {t_ours:6.2f} s  {report.summary()}")

            t0 = time.monotonic()
            skopeo_copy_all(layout, theirs, seeded_refs(layout, theirs.endpoint, PROJECT))
            t_skopeo = time.monotonic() - t0
            print(f"skopeo copy, one by one:       {t_skopeo:6.2f} s")
            print(f"ratio push_missing / skopeo:   {t_ours / t_skopeo:6.2f}  (goal <= 0.8)")

            t0 = time.monotonic()
            again = push_missing(layout, client(), PROJECT, jobs=a.jobs)
            t_again = time.monotonic() - t0
            print(f"re-seed, all present:          {t_again:6.2f} s  ({again.bytes_pushed} bytes pushed)")


if __name__ == "__main__":
    main()
