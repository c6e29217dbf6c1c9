"""What the bundler and the installer share: the error type, YAML documents, digests, progress, the bundle format
(`bundle/`, with the verify and unpack commands' bodies), OCI names, image references, the registry v2 client, the
version, and the CLIs' pure output helpers.

Imports neither `installer` nor `bundler`; no command line, no host access (tests/unit/test_boundaries.py).
"""
