"""The `bundler` command: typer adapter only (parse, call, print, exit code)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Optional

import typer

from bundler import spec as spec_mod
from contract import cliutil
from contract.bundle import DEFAULT_LEVEL, commands
from contract.cliutil import emit, guarded
from contract.version import __version__, with_commit


def _new_app(name: str, help_text: str) -> typer.Typer:
    """A typer app with --debug and --version (installer/cli_common.py builds the installer's: contract/ has no CLI)."""
    app = typer.Typer(name=name, help=help_text, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})

    def _version(value: bool) -> None:
        if value:
            typer.echo(f"{name} {_version_text()}")
            raise typer.Exit()

    @app.callback()
    def _root(
        debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
        version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                               help="Print the version and exit."),
    ) -> None:
        cliutil.set_debug(debug)

    return app


def _version_text() -> str:
    """The version, with the git commit of the checkout when run from one."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return __version__
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                           text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return __version__
    return with_commit(r.stdout.strip() if r.returncode == 0 else None)


app = _new_app("bundler", "Build a signed offline bundle for a Kubernetes 1.10.3 HA cluster (connected side).")

JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")
MIRRORS = typer.Option(None, "--mirrors", help="Mirrors overlay file (top-level `mirrors:`), applied over the spec's.")


@app.command()
def validate(
    spec: Path = typer.Argument(Path("bundle-spec.yaml"), help="Bundle spec file."),
    mirrors: Optional[Path] = MIRRORS,
    as_json: bool = JSON,
) -> None:
    """Validate a bundle spec; print every problem with its YAML path (exit 2 if any)."""

    def body() -> None:
        s = spec_mod.load(spec, mirrors)
        data = {
            "spec": str(spec),
            "valid": True,
            "name": s.name,
            "version": s.version,
            "options": s.options.model_dump(),
            "binaries": [f"{b.name} {b.version}" for b in s.selected_binaries()],
            "packages": [p.name + (f"-{p.version}" if p.version else "") for p in s.selected_packages()],
            "images": [i.ref for i in s.selected_images()],
        }
        emit(data, as_json, lambda d: (
            f"{d['spec']}: valid: {d['name']} {d['version']}: {len(d['binaries'])} binaries, "
            f"{len(d['packages'])} requested RPMs, {len(d['images'])} images"))

    guarded(body, as_json=as_json)


CACHE = typer.Option(None, "--cache", help="Download cache (default $K8S_OFFLINE_CACHE or ~/.cache/k8s-offline).")
JOBS = typer.Option(4, "--jobs", min=1, max=64, help="Parallel downloads.")


def _cache(path: Optional[Path]):
    from bundler.cache import Cache

    return Cache(path)


@app.command()
def lock(
    spec: Path = typer.Argument(Path("bundle-spec.yaml"), help="Bundle spec file; the lock is written beside it."),
    mirrors: Optional[Path] = MIRRORS,
    cache: Optional[Path] = CACHE,
    jobs: int = JOBS,
    as_json: bool = JSON,
) -> None:
    """Resolve every binary, RPM closure and image digest of the spec and pin them in bundle-lock.yaml."""
    from bundler import build as build_mod
    from bundler import lock as lock_mod

    def body() -> None:
        path = build_mod.run_lock(spec, mirrors, _cache(cache), jobs)
        lk = lock_mod.load(path)
        emit({"lock": str(path), "binaries": len(lk.binaries), "rpms": len(lk.rpms), "images": len(lk.images),
              "bytes": lk.total_size()}, as_json,
             lambda d: f"wrote {d['lock']}: {d['binaries']} binaries, {d['rpms']} RPMs, {d['images']} images, "
                       f"{d['bytes']} bytes pinned")

    guarded(body, as_json=as_json)


@app.command()
def build(
    spec: Path = typer.Option(Path("bundle-spec.yaml"), "--spec", help="Bundle spec file."),
    key: Path = typer.Option(..., "--key", help="Ed25519 private key (from `bundler keygen`); bundle-p256.key "
                             "beside it, when it exists, adds the P-256 signature."),
    p256_key: Optional[Path] = typer.Option(None, "--p256-key", help="ECDSA P-256 private key for the second "
                                            "signature (checkable with openssl 1.0.2); default: bundle-p256.key "
                                            "beside --key, if any."),
    out: Path = typer.Option(Path("dist"), "--out", help="Output directory."),
    mirrors: Optional[Path] = MIRRORS,
    cache: Optional[Path] = CACHE,
    jobs: int = JOBS,
    locked: bool = typer.Option(False, "--locked", help="Refuse to resolve anything not already in the lock; "
                                "with everything in the cache, make no network request at all."),
    check_upstream: bool = typer.Option(False, "--check-upstream", help="With --locked: still ask the "
                                        "registries whether each image tag names the locked digest."),
    split_size: Optional[str] = typer.Option(None, "--split-size", help="Split into parts of at most SIZE "
                                             "(e.g. 3900M fits FAT32)."),
    pythons: str = typer.Option(",".join(("3.9", "3.10", "3.11", "3.12")), "--pythons",
                                help="CPython versions the bundled installer wheels serve (comma list)."),
    include_static: bool = typer.Option(True, "--static/--no-static",
                                        help="Include the static installer executable (installer/installer-linux-amd64)."),
    level: int = typer.Option(DEFAULT_LEVEL, "--level", help="zstd level (1-22) for the members that compress "
                              "(executables, tarballs, metadata; 19 is a few % smaller and ~10x slower); already "
                              "compressed ones are stored fast whatever this is."),
    since: Optional[Path] = typer.Option(None, "--since", help="Write a delta bundle: only what the site lacks, "
                                         "from its receipt (`installer receipt -o FILE`) or the bundle-lock.yaml of "
                                         "the bundle it has; combined on site with that unpacked bundle."),
    as_json: bool = JSON,
) -> None:
    """Fetch (or take from the cache) everything the lock pins and write the signed bundle."""
    from bundler import build as build_mod

    def body() -> None:
        s = build_mod.run_build(spec, mirrors, key, out, _cache(cache), jobs=jobs, locked=locked,
                                split_size=split_size, pythons=[p.strip() for p in pythons.split(",") if p.strip()],
                                include_static=include_static, level=level, p256_key_path=p256_key,
                                check_upstream=check_upstream, since_path=since)
        emit(s.as_dict(), as_json, _build_text)

    guarded(body, as_json=as_json)


def _build_text(d: dict) -> str:
    """The build summary for people: what was written, downloaded, and which keys signed it."""
    if d.get("fingerprint_p256"):
        p256 = (f"\nsigned with P-256 {d['fingerprint_p256']} ({d['p256_key']}) too: manifest.sig.p256, "
                "checkable with openssl 1.0.2 (CentOS 7) and bundle-p256.pub")
    else:
        p256 = ("\nEd25519 signature only (no bundle-p256.key beside the key, no --p256-key): openssl 1.0.2 "
                "(CentOS 7) cannot check it; `bundler keygen` writes both keys")
    return (f"wrote {d['bundle']}" + (f" ({len(d['parts'])} parts)" if d["parts"] else "") +
            f": {d['files']} files, {d['bytes']} bytes, {d['compressed_bytes']} compressed\n"
            f"downloaded {d['downloaded_bytes']} bytes, {d['cache_hits']} cache hits; "
            f"lock {d['lock']}{' (written)' if d['lock_written'] else ''}; signer {d['fingerprint']} (Ed25519)"
            + p256 + (f"\nbootstrap (no zstd needed) {d['bootstrap']}" if d.get("bootstrap") else "")
            + ("\n" + "\n".join(line.strip() for line in _delta_text(d["delta"])) if d.get("delta") else ""))


cache_app = typer.Typer(help="The download cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("prune")
def cache_prune(
    spec: Path = typer.Option(Path("bundle-spec.yaml"), "--spec", help="Keep what this spec's lock pins."),
    cache: Optional[Path] = CACHE,
    as_json: bool = JSON,
) -> None:
    """Remove cached objects the lock beside SPEC does not reference, and stale partial downloads."""
    from bundler import lock as lock_mod

    def body() -> None:
        lk = lock_mod.load(lock_mod.path_for(spec))
        c = _cache(cache)
        r = c.prune(lk.digests())
        emit(dataclasses.asdict(r), as_json, lambda d: (
            f"removed {len(d['removed_objects'])} objects ({d['removed_bytes']} bytes) and {d['removed_partials']} "
            f"partial files; kept {d['kept_objects']} objects ({d['kept_bytes']} bytes)"))

    guarded(body, as_json=as_json)


@app.command()
def keygen(
    out: Path = typer.Option(..., "--out", help="Directory for bundle.key (0600) and bundle.pub (Ed25519), "
                             "bundle-p256.key (0600) and bundle-p256.pub (ECDSA P-256)."),
    as_json: bool = JSON,
) -> None:
    """Create the signing keys: Ed25519, and ECDSA P-256 for hosts with openssl 1.0.2; refuses to overwrite any."""
    from contract import bundle as fmt

    def body() -> None:
        files = fmt.generate_keys(out)
        data = {"private_key": str(files.key), "public_key": str(files.pub),
                "fingerprint": fmt.fingerprint(fmt.load_public_key(files.pub)),
                "p256_private_key": str(files.p256_key), "p256_public_key": str(files.p256_pub),
                "fingerprint_p256": fmt.fingerprint(fmt.load_public_key(files.p256_pub))}
        emit(data, as_json, lambda d: (
            f"wrote {d['private_key']} (keep it secret) and {d['public_key']}: Ed25519, fingerprint "
            f"{d['fingerprint']}\n"
            f"wrote {d['p256_private_key']} (keep it secret) and {d['p256_public_key']}: ECDSA P-256 (for openssl "
            f"1.0.2, CentOS 7), fingerprint {d['fingerprint_p256']}"))

    guarded(body, as_json=as_json)


def _inspect_text(d: dict) -> str:
    lines = [f"{d['name']} {d['version']}  created {d['created']}",
             f"  {d['files']} files, {d['bytes']} bytes ({d['compressed_bytes']} compressed)"]
    lines.append("  signed by " + (d.get("signer") or "an unnamed Ed25519 key") + " (Ed25519, manifest.sig)"
                 + (f" and {d['signer_p256']} (P-256, manifest.sig.p256)" if d.get("signer_p256") else ""))
    sig = d.get("signature")
    if sig:
        lines.append(f"  verified with the {sig['key_type']} key {sig['fingerprint']}: {', '.join(sig['checked'])}"
                     + (f"; not checked (no key): {', '.join(sig['not_checked'])}" if sig["not_checked"] else ""))
    else:
        lines.append("  not verified: pass --pub to check")
    if d.get("parts"):
        lines.append(f"  {len(d['parts'])} parts: {', '.join(d['parts'])}")
    if d.get("delta"):
        lines += _delta_text(d["delta"])
    lines.append("  kinds:")
    lines += [f"    {k:<10} {v['files']:>6} files {v['bytes']:>14} bytes" for k, v in d["kinds"].items() if v["files"]]
    lines.append(f"  components (manifest format {d['format_version']}):")
    lines += [f"    {c['kind'] + '/' + c['name']:<28} {c['version']}"
              + (f"  ({len(c['paths'])} files)" if len(c["paths"]) > 1 else "") for c in d["components"]]
    if d["options"]:
        lines.append("  options: " + ", ".join(f"{k}={v}" for k, v in d["options"].items()))
    if d["trust"]:
        lines.append("  trust (how each source was checked):")
        lines += [f"    {t['kind'] + '/' + t['name']:<40} {t['check']}" + (f" {','.join(t['keys'])}" if t["keys"] else "")
                  + (f"  ({t['detail']})" if t["detail"] else "") for t in d["trust"]]
    lines += [f"  note: {n}" for n in d["notes"]]
    lines += [f"  WARNING: {w}" for w in d["warnings"]]
    if d.get("legacy_components"):
        lines.append("  format 1 entries naming no component, trust or option: "
                     + ", ".join(f"{k}={v}" for k, v in d["legacy_components"].items()))
    return "\n".join(lines)


def _delta_text(delta: dict) -> list:
    b = delta["base"]
    base = (f"{b['name']} {b['version']} " if b["name"] else "") + (
        f"(manifest sha256 {b['manifest_sha256']})" if b["manifest_sha256"] else f"(lock sha256 {b['lock_sha256']})")
    lines = [f"  delta bundle: combined on site with its base {base}"]
    for side, label in (("carried", "carries"), ("from_base", "takes from the base")):
        v = delta[side]
        lines.append(f"    {label}: {v['files']} files, {v['bytes']} bytes ("
                     + ", ".join(f"{k} {kv['files']}/{kv['bytes']} B" for k, kv in sorted(v["kinds"].items())) + ")")
    return lines


@app.command()
def inspect(
    bundle: Path = typer.Argument(..., help="The bundle file, its first (or any) part, or the directory of parts."),
    pub: Optional[Path] = typer.Option(None, "--pub", help="Also verify the manifest's signature with this key "
                                       "(bundle.pub or bundle-p256.pub)."),
    as_json: bool = JSON,
) -> None:
    """Show what a bundle holds (from its manifest; nothing is unpacked)."""
    from contract import bundle as fmt

    def body() -> None:
        key = fmt.load_public_key(pub) if pub else None
        emit(fmt.inspect_bundle(bundle, key), as_json, _inspect_text)

    guarded(body, as_json=as_json)


@app.command(help=commands.VERIFY_HELP)
def verify(
    bundle: Path = typer.Argument(..., help=commands.VERIFY_BUNDLE_HELP),
    pub: Path = typer.Option(..., "--pub", help=commands.PUB_HELP),
    base: Optional[Path] = typer.Option(None, "--base", help=commands.BASE_HELP),
    as_json: bool = JSON,
) -> None:
    # the same check the air-gapped side runs (`installer verify`), so both sides agree on what "verified" means
    commands.verify(bundle, pub, as_json, base)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
