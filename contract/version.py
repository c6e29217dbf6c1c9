"""The one version of the distribution: the installer, the bundler and the SBOM's creator all read it here
(static/build.sh reads the `__version__ = "..."` line of this file with sed, so keep it on one line)."""

from __future__ import annotations

from typing import Optional

__version__ = "0.1.0"


def with_commit(commit: Optional[str]) -> str:
    """The version as --version prints it: `0.1.0 (commit abcdef123456)`, or the bare version without a commit."""
    return f"{__version__} (commit {commit})" if commit else __version__
