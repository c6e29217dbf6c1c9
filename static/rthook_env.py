"""PyInstaller runtime hook: give subprocesses (ssh, openssl, ...) the environment the user started us with."""

import os
import sys


def _restore_library_path() -> None:
    """Undo the bootloader's LD_LIBRARY_PATH (its unpacked Debian 12 libraries) for child processes."""
    # Inherited by the site's ssh on CentOS 7, Debian 12's libz/libcrypto would shadow the system's and break it.
    orig = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if orig is not None:
        os.environ["LD_LIBRARY_PATH"] = orig
        return
    meipass = getattr(sys, "_MEIPASS", None)
    current = os.environ.get("LD_LIBRARY_PATH")
    if not meipass or current is None:
        return
    kept = [p for p in current.split(os.pathsep) if p and not p.startswith(meipass)]
    if kept:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(kept)
    else:
        del os.environ["LD_LIBRARY_PATH"]


_restore_library_path()
