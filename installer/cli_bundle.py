"""`installer verify` and `installer unpack`: the bundle (or one part of it) checked against its signature.

The bodies, texts and output live in contract/bundle/commands.py (bundler's `verify` runs the same)."""

from __future__ import annotations

from pathlib import Path

import typer

from contract.bundle import commands
from installer.cli_common import JSON


def verify(
    bundle: Path = typer.Argument(..., help=commands.VERIFY_BUNDLE_HELP),
    pub: Path = typer.Option(..., "--pub", help=commands.PUB_HELP),
    as_json: bool = JSON,
) -> None:
    commands.verify(bundle, pub, as_json)


def unpack(
    bundle: Path = typer.Argument(..., help=commands.UNPACK_BUNDLE_HELP),
    pub: Path = typer.Option(..., "--pub", help=commands.PUB_HELP),
    dest: Path = typer.Option(..., "--dest", help=commands.DEST_HELP),
    as_json: bool = JSON,
) -> None:
    commands.unpack(bundle, pub, dest, as_json)
