"""The `bundler` command: typer adapter only (parse, call, print, exit code)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bundler import spec as spec_mod
from installer.cliutil import emit, guarded, new_app

app = new_app("bundler", "Build a signed offline bundle for a Kubernetes 1.10.3 HA cluster (connected side).")

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


@app.command()
def keygen(
    out: Path = typer.Option(..., "--out", help="Directory for bundle.key (0600) and bundle.pub."),
    as_json: bool = JSON,
) -> None:
    """Create an Ed25519 signing key pair; refuses to overwrite an existing one."""
    from installer import bundle as fmt

    def body() -> None:
        key, pub = fmt.generate_keypair(out)
        fpr = fmt.fingerprint(fmt.load_public_key(pub))
        emit({"private_key": str(key), "public_key": str(pub), "fingerprint": fpr}, as_json,
             lambda d: f"wrote {d['private_key']} (keep it secret) and {d['public_key']}\nfingerprint {d['fingerprint']}")

    guarded(body, as_json=as_json)


def _inspect_text(d: dict) -> str:
    lines = [f"{d['name']} {d['version']}  created {d['created']}",
             f"  {d['files']} files, {d['bytes']} bytes ({d['compressed_bytes']} compressed)"]
    if d.get("signature"):
        lines.append(f"  signature verified, signer {d['signature']['fingerprint']}")
    if d.get("parts"):
        lines.append(f"  {len(d['parts'])} parts: {', '.join(d['parts'])}")
    lines.append("  kinds:")
    lines += [f"    {k:<10} {v['files']:>6} files {v['bytes']:>14} bytes" for k, v in d["kinds"].items() if v["files"]]
    lines.append("  components:")
    lines += [f"    {k:<28} {v}" for k, v in d["components"].items()]
    return "\n".join(lines)


@app.command()
def inspect(
    bundle: Path = typer.Argument(..., help="The bundle file, its first (or any) part, or the directory of parts."),
    pub: Optional[Path] = typer.Option(None, "--pub", help="Also verify the manifest's signature with this key."),
    as_json: bool = JSON,
) -> None:
    """Show what a bundle holds (from its manifest; nothing is unpacked)."""
    from installer import bundle as fmt

    def body() -> None:
        key = fmt.load_public_key(pub) if pub else None
        emit(fmt.inspect_bundle(bundle, key), as_json, _inspect_text)

    guarded(body, as_json=as_json)


@app.command()
def verify(
    bundle: Path = typer.Argument(..., help="The bundle file, its first (or any) part, or the directory of parts."),
    pub: Path = typer.Option(..., "--pub", help="The signer's public key (bundle.pub)."),
    as_json: bool = JSON,
) -> None:
    """Check the signature, then every member's size and sha256, and that nothing else is in the bundle."""
    from installer import bundle as fmt
    from installer.progress import bar

    def body() -> None:
        key = fmt.load_public_key(pub)
        with bar("verify") as progress:
            r = fmt.verify_bundle(bundle, key, progress=progress)
        emit({"bundle": str(bundle), "ok": True, "name": r.name, "version": r.version, "files": r.files,
              "bytes": r.bytes, "fingerprint": r.fingerprint}, as_json,
             lambda d: f"{d['bundle']}: OK: {d['files']} files, {d['bytes']} bytes verified; signed by {d['fingerprint']}")

    guarded(body, as_json=as_json)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
