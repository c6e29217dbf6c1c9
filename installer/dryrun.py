"""`installer plan` writes nothing: it loads the site as apply does, but on a scratch copy of the state directory.

The scratch directory (under $TMPDIR, 0700, removed afterwards whatever happens) gets copies of the small
records planning reads (the PKI, the generated secrets, bundle.json, pending.json, etcd-members.json) and
symbolic links to the big things apply already made (the unpacked bundle named by bundle.json, extracted
executables). Everything apply would create or change lands in the scratch copy instead: a missing PKI is
created there (so every certificate-dependent file plans as to-be-written, as it will be), a bundle not yet
unpacked is verified and unpacked there. What the scratch copy gained is reported as "apply would create".
The real state directory is only read, and a missing one stays missing.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List

from contract.errors import Error
from installer import harbor_install
from installer import state as state_mod
from installer.plan_model import Plan

COPIED_DIRS = ("pki", harbor_install.SECRETS_DIR)
COPIED_FILES = (state_mod.BUNDLE_INFO, state_mod.PENDING, state_mod.ETCD_MEMBERS)
BINARIES = "binaries"


@dataclass
class PlanResult:
    """The plan, and what apply would add to the state directory (on the control host) before acting."""

    plan: Plan
    state_dir: str
    create: List[str] = field(default_factory=list)
    reissue: List[str] = field(default_factory=list)

    @property
    def images(self):
        return self.plan.images

    @property
    def empty(self) -> bool:
        """Nothing to do at all: no host changes and nothing new in the state directory."""
        return self.plan.empty and not self.create and not self.reissue

    def to_dict(self) -> dict:
        return dict(self.plan.to_dict(), changes=not self.empty,
                    state={"dir": self.state_dir, "would_create": list(self.create),
                           "would_reissue": list(self.reissue)})

    def text(self) -> str:
        lines = [self.plan.text().rstrip("\n")]
        if self.create:
            lines.append(f"apply would create in {self.state_dir}: " + "; ".join(self.create))
        if self.reissue:
            lines.append("apply would reissue: " + "; ".join(self.reissue))
        return "\n".join(lines)


@dataclass
class Scratch:
    """A scratch copy of the state directory `real` at `root`."""

    real: Path
    root: Path

    def result(self, plan: Plan, site) -> PlanResult:
        """The plan with what loading `site` (an apply.Site on this scratch copy) added to the state."""
        out = PlanResult(plan, str(self.real))
        if not self.real.exists():
            out.create.append(f"the state directory {self.real} (0700)")
        if not site.bundle.reused:
            out.create.append(f"the verified, unpacked bundle {self.real / site.bundle.dir.name}")
        report = site.pki_report
        if report is not None:
            if report.ca_created:
                out.create.append("site CA (10 years; never regenerated)")
            issued = [e for e in report.entries if e.action == "issued"]
            if any(e.name == "sa" for e in issued):
                out.create.append("service-account key pair")
            new = [e.name for e in issued if e.name != "sa" and e.reason == "new"]
            if new:
                out.create.append(f"{len(new)} certificate(s): {', '.join(new)}")
            out.reissue += [f"{e.name} ({e.reason})" for e in issued if e.name != "sa" and e.reason != "new"]
        secrets = self.root / harbor_install.SECRETS_DIR
        made = sorted(p.name for p in secrets.glob("*") if not p.name.startswith(".")
                      and not (self.real / harbor_install.SECRETS_DIR / p.name).exists()) if secrets.is_dir() else []
        if made:
            out.create.append(f"generated secret(s) in {harbor_install.SECRETS_DIR}/: {', '.join(made)}")
        extracted = sorted(p.relative_to(self.root).as_posix() for p in (self.root / BINARIES).glob("*/*")
                           if p.is_file() and not p.is_symlink() and not p.name.startswith("."))
        if extracted:
            out.create.append(f"{len(extracted)} executable(s) extracted from the bundle into "
                              f"{self.real / Path(extracted[0]).parent}")
        return out


def _copy_in(real: Path, root: Path) -> None:
    """Copies of the small records, links to the unpacked bundle and extracted executables."""
    for name in COPIED_DIRS:
        if (real / name).is_dir():
            shutil.copytree(real / name, root / name, symlinks=True)
    for name in COPIED_FILES:
        if (real / name).is_file():
            shutil.copy2(real / name, root / name)
    info = state_mod.StateDir(real).bundle_info() or {}
    digest = str(info.get("manifest_sha256") or "")
    unpacked = real / f"bundle-{digest[:16]}"
    if digest and unpacked.is_dir():  # only the one bundle.json vouches for; apply re-verifies it anyway
        (root / unpacked.name).symlink_to(unpacked.resolve(), target_is_directory=True)
    for d in sorted((real / BINARIES).glob("*")) if (real / BINARIES).is_dir() else []:
        if not d.is_dir():
            continue
        (root / BINARIES / d.name).mkdir(parents=True)
        for f in d.iterdir():
            if f.is_file() and not f.name.startswith("."):
                (root / BINARIES / d.name / f.name).symlink_to(f.resolve())


def _relocate(e: Error, scratch: Path, real: Path) -> None:
    """Errors name the real state directory, not the scratch copy."""
    def fix(text):
        return text.replace(str(scratch), str(real)) if isinstance(text, str) else text

    e.message, e.context, e.hint = fix(e.message), fix(e.context), fix(e.hint)
    e.details = [fix(d) for d in e.details]
    e.args = (e.message,)


@contextmanager
def scratch(real: Path) -> Iterator[Scratch]:
    """A scratch copy of the state directory `real` for one plan; removed afterwards."""
    real = Path(real).absolute()
    tmp = Path(tempfile.mkdtemp(prefix="k8s-offline-plan-"))
    root = tmp / "state"
    try:
        root.mkdir(mode=0o700)
        try:
            _copy_in(real, root)
        except OSError as e:
            raise Error(f"cannot read the state directory {real}: {e.strerror or e}",
                        context="planning (plan reads the state directory and writes nothing)",
                        hint="run plan as the user that runs apply, with the same --state") from None
        try:
            yield Scratch(real, root)
        except Error as e:
            _relocate(e, root, real)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["PlanResult", "Scratch", "scratch"]
