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
    ap.add_argument("--no-hosts", action="store_true", help="stop before booting test hosts")
    args = ap.parse_args(argv)
    work = args.dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("K8S_OFFLINE_STATIC_CACHE", "/var/tmp/k8s-offline-static-cache")
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
        if not all((work / "keys" / k).exists() for k in ("bundle.key", "bundle-p256.key")):
            shutil.rmtree(work / "keys", ignore_errors=True)  # a demo key pair from before P-256 signatures
            d.run("bundler", "keygen", "--out", "keys")
        d.run("bundler", "lock", "bundle-spec.yaml", "--mirrors", mirrors, "--cache", "cache")

        d.step("Build the signed bundle (split into parts, as for a FAT32 stick)")
        d.run("bundler", "build", "--spec", "bundle-spec.yaml", "--key", "keys/bundle.key", "--out", "dist",
              "--mirrors", mirrors, "--cache", "cache", "--pythons", PY, "--locked", "--split-size", "16M")
        d.run("bundler", "inspect", "dist", "--pub", "keys/bundle.pub")

        d.step("Air-gapped side: verify, then unpack (nothing is written unless all verifies)")
        d.run("installer", "verify", "dist", "--pub", "keys/bundle.pub")
        print("  (as on CentOS 7, with nothing but tar and its openssl 1.0.2: the P-256 signature)")
        shutil.rmtree(work / "centos7", ignore_errors=True)
        (work / "centos7").mkdir()
        d.run("tar", "-xf", "dist/k8s-1.10.3.bootstrap.tar", "-C", "centos7", "manifest.json", "manifest.sig.p256")
        d.run("openssl", "dgst", "-sha256", "-verify", "keys/bundle-p256.pub", "-signature",
              "centos7/manifest.sig.p256", "centos7/manifest.json")
        shutil.rmtree(work / "site", ignore_errors=True)
        d.run("installer", "unpack", "dist", "--pub", "keys/bundle.pub", "--dest", "site")

        d.step("Generate the site PKI and render every host's files (the example inventory)")
        shutil.rmtree(work / "rendered", ignore_errors=True)
        d.run("installer", "render", "-i", "inventory.yaml", "--out", "rendered", "--state", "state-example")
        d.run("installer", "certs", "check", "-i", "inventory.yaml", "--state", "state-example")
        if args.no_hosts:
            print(f"\ndemo finished (no test hosts) in {time.monotonic() - d.t0:.1f}s; everything is under {work}")
            return 0

        d.step("The next patch release (1.10.4): lock it now, while the connected side is online")
        (work / "next").mkdir(exist_ok=True)
        shutil.copyfile(ups.spec_for("v1.10.4"), work / "next" / "bundle-spec.yaml")
        d.run("bundler", "lock", "next/bundle-spec.yaml", "--mirrors", mirrors, "--cache", "cache")
        apply_on_test_hosts(d, work, mirrors)
    finally:
        ups.stop()
    print(f"\ndemo finished in {time.monotonic() - d.t0:.1f}s; everything is under {work}")
    return 0


def apply_on_test_hosts(d: Demo, work: Path, mirrors: str) -> None:
    """Boot 4 test hosts (systemd-nspawn), then plan, apply, check and re-apply the cluster on them; day 2: an
    etcd snapshot, then the patch upgrade to 1.10.4 with a delta bundle computed from the site's receipt."""
    from tests.e2e import cluster
    from tests.e2e.testbed import Testbed
    from tests.fixtures.upstream import rpms, yumrepos

    d.step("Boot 4 test hosts: systemd-nspawn with real systemd + sshd on 198.18.250.0/24 (first run: debootstrap)")
    tb = Testbed(prefix="demo", net="198.18.250", n_hosts=4)
    # the test hosts are booted fresh, with new ssh host keys: what an earlier demo learnt about them
    # (known_hosts, the control host's state dir) belongs to hosts that no longer exist
    (work / "known_hosts").unlink(missing_ok=True)
    shutil.rmtree(work / "state", ignore_errors=True)
    reg = None
    try:
        tb.up()
        for h in tb.hosts:
            print(f"  {h.name}  {h.address}")
        # a real CentOS 7 host already has the base packages; the Debian test hosts get them in the rpm db
        base_dir = Path(os.environ.get("UPSTREAM_CACHE", "/var/tmp/k8s-offline-upstream-cache"))
        pkgs = base_dir / "www" / yumrepos.repo_path("base") / "Packages"
        cluster.register_base_rpms(tb, range(1, 5), [pkgs / f"{nvra}.rpm" for nvra in sorted(rpms.INSTALLED)])
        reg = cluster.Registry(work / "site-registry", tb.control_address).start()
        inv = cluster.write_inventory(tb, work / "inventory-hosts.yaml", 4)
        print(f"  site registry (docker-registry) at {tb.control_address}:{cluster.REGISTRY_PORT}; "
              f"inventory {inv}")
        bundle = ["-b", "dist", "--pub", "keys/bundle.pub", "-i", str(inv), "--state", "state",
                  "--known-hosts", str(work / "known_hosts")]

        d.step("installer plan: what apply will do, per host")
        r = d.run("installer", "plan", *bundle, check=False)
        if r.returncode not in (0, 1):
            raise SystemExit("demo: plan failed")

        d.step("installer apply: verify, seed the registry, PKI, etcd, masters, VIP, nodes, checks")
        d.run("installer", "apply", *bundle)

        d.step("installer check: etcd over TLS, /healthz via the VIP, leaders, nodes Ready")
        d.run("installer", "check", "-i", str(inv), "--state", "state")

        d.step("The evidence report")
        report = work / "state" / "report.txt"
        print("  " + report.read_text().rstrip().replace("\n", "\n  ") if report.exists() else "  (no report)")

        d.step("Apply again: nothing to do")
        d.run("installer", "apply", *bundle)

        site = ["-i", str(inv), "--state", "state", "--known-hosts", str(work / "known_hosts")]
        d.step("Day 2: an etcd snapshot (verified, kept in the state directory)")
        d.run("installer", "etcd", "snapshot", *site)

        d.step("Day 2: what the site holds (no secrets), carried out to the connected side")
        d.run("installer", "receipt", *site, "-o", "site-receipt.json")

        d.step("Connected side: a delta bundle of 1.10.4 with only what the site lacks")
        shutil.rmtree(work / "dist-next", ignore_errors=True)
        d.run("bundler", "build", "--spec", "next/bundle-spec.yaml", "--key", "keys/bundle.key", "--out", "dist-next",
              "--mirrors", mirrors, "--cache", "cache", "--pythons", PY, "--locked", "--since", "site-receipt.json")
        delta = next((work / "dist-next").glob("*.delta-from-*.bundle.tar.zst"))
        d.run("bundler", "inspect", str(delta), "--pub", "keys/bundle.pub")
        print(f"  delta {delta.stat().st_size} bytes; the complete 1.10.3 bundle was "
              f"{sum(p.stat().st_size for p in (work / 'dist').glob('*.part*'))} bytes")

        d.step("installer upgrade with the delta: combined with the unpacked 1.10.3, then a rolling upgrade")
        d.run("installer", "upgrade", "-b", str(delta), "--pub", "keys/bundle.pub", *site)
        d.run("installer", "check", *site)
    finally:
        if reg is not None:
            reg.stop()
        left = tb.down()
        if left:
            print(f"  test hosts: could not remove: {left}")


if __name__ == "__main__":
    sys.exit(main())
