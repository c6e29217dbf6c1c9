"""`make demo`: build a bundle from local stand-in upstreams and take it through the installer, step by step.

Every step is the command a user would type (printed with `$`), run for real. Stand-in servers are stopped
at the end, also on failure; the work directory is kept for inspection.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PY = f"{sys.version_info.major}.{sys.version_info.minor}"


class Demo:
    """Runs and prints the steps; remembers what to stop."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.t0 = time.monotonic()
        self.step_no = 0

    def step(self, title: str) -> None:
        self.step_no += 1
        print(f"\n=== {self.step_no}. {title}  [{time.monotonic() - self.t0:5.1f}s]", flush=True)

    def run(self, *args: str, check: bool = True, env: dict = None) -> subprocess.CompletedProcess:
        shown = " ".join(shlex.quote(a.replace(str(BIN) + "/", "").replace(str(self.work) + "/", "$DEMO/"))
                         for a in args)
        print(f"$ {shown}", flush=True)
        exe = str(BIN / args[0]) if (BIN / args[0]).exists() else args[0]
        r = subprocess.run([exe, *args[1:]], cwd=self.work, text=True, capture_output=True,
                           env={**os.environ, **(env or {})})
        out = (r.stdout + r.stderr).rstrip()
        if out:
            print("  " + out.replace("\n", "\n  "), flush=True)
        if check and r.returncode != 0:
            raise SystemExit(f"demo: step failed (exit {r.returncode}): {shown}")
        return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/k8s-offline-demo"), help="work directory")
    args = ap.parse_args(argv)
    work = args.dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    d = Demo(work)
    print(f"demo work directory: {work}  (shown as $DEMO)")

    from tests.fixtures.upstream import start

    d.step("Start the stand-in upstreams (HTTP release mirror, el7 yum repos, registries)")
    ups = start(work / "upstreams", cache=Path(os.environ.get("UPSTREAM_CACHE",
                                                              "/var/tmp/k8s-offline-upstream-cache")))
    try:
        print("  " + ups.summary().replace("\n", "\n  "))
        # the project's spec with the stand-ins' test signing keys pinned instead of CentOS's and Docker's
        shutil.copyfile(ups.spec_file, work / "bundle-spec.yaml")
        shutil.copyfile(ROOT / "inventory.example.yaml", work / "inventory.yaml")
        mirrors = str(work / "upstreams" / "mirrors.yaml")

        d.step("Validate the spec (with the stand-ins as mirrors) and the inventory")
        d.run("bundler", "validate", "bundle-spec.yaml", "--mirrors", mirrors)
        d.run("installer", "validate", "inventory.yaml")
        bad = work / "bad-spec.yaml"
        bad.write_text((ROOT / "bundle-spec.yaml").read_text()
                       .replace('ref: "k8s.gcr.io/pause-amd64:3.1"', 'ref: "k8s.gcr.io/Pause:3.1"')
                       .replace("version: 1.10.3\n", "version: 1.10.3\nverison: typo\n", 1))
        print("  (a spec with two mistakes, to show the errors:)")
        d.run("bundler", "validate", "bad-spec.yaml", check=False)

        d.step("Create a signing key (once) and lock every artifact")
        if not (work / "keys" / "bundle.key").exists():
            d.run("bundler", "keygen", "--out", "keys")
        d.run("bundler", "lock", "bundle-spec.yaml", "--mirrors", mirrors, "--cache", "cache")

        d.step("Build the signed bundle (split into parts, as for a FAT32 stick)")
        d.run("bundler", "build", "--spec", "bundle-spec.yaml", "--key", "keys/bundle.key", "--out", "dist",
              "--mirrors", mirrors, "--cache", "cache", "--pythons", PY, "--locked", "--split-size", "16M")
        d.run("bundler", "inspect", "dist", "--pub", "keys/bundle.pub")

        d.step("Air-gapped side: verify, then unpack (nothing is written unless all verifies)")
        d.run("installer", "verify", "dist", "--pub", "keys/bundle.pub")
        shutil.rmtree(work / "site", ignore_errors=True)
        d.run("installer", "unpack", "dist", "--pub", "keys/bundle.pub", "--dest", "site")

        d.step("Generate the site PKI and render every host's files")
        shutil.rmtree(work / "rendered", ignore_errors=True)
        d.run("installer", "render", "-i", "inventory.yaml", "--out", "rendered", "--state", "state")
        d.run("installer", "certs", "check", "-i", "inventory.yaml", "--state", "state")
        print(f"\ndemo finished in {time.monotonic() - d.t0:.1f}s; everything is under {work}")
    finally:
        ups.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
