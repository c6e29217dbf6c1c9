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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
