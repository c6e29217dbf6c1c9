"""Entry point of the static installer executable (PyInstaller): the `installer` CLI with its build in --version."""

import installer
from installer import _build_info  # written by static/build.sh into the frozen build only

# Before installer.cli: `installer.__version__` names the build's commit too (--version reads _build_info).
installer.__version__ = _build_info.VERSION_TEXT

from installer.cli import main  # noqa: E402 (after the assignment above)

if __name__ == "__main__":
    main()
