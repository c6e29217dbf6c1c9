"""Connected side: build a signed offline bundle from bundle-spec.yaml."""

from contract.version import __version__  # one version for the whole distribution

__all__ = ["__version__"]
