"""Entry point of the static installer executable (PyInstaller): the `installer` CLI with its build in --version."""

import installer
from installer import _build_info  # written by static/build.sh into the frozen build only

# Before installer.cli (and cliutil, which copies __version__ at import): --version names the build's commit.
installer.__version__ = _build_info.VERSION_TEXT

from installer.cli import main

if __name__ == "__main__":
    main()
