"""What the bundler and the installer share: the error type, OCI names, image references, the registry v2 client.

Imports neither `installer` nor `bundler`; no command line, no host access (tests/unit/test_boundaries.py).
"""
