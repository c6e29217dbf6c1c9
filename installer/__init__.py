"""Air-gapped side: verify a bundle, seed the registry, bring up the cluster."""

from contract.version import __version__  # one version for the whole distribution

__all__ = ["__version__"]
