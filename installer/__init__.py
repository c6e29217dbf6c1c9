"""Air-gapped side: verify a bundle, seed the registry, bring up the cluster."""

__version__ = "0.1.0"
