"""OpenPGP checks of yum repositories: pinned keys, RPM signatures (rpmkeys) and repomd.xml.asc (gpgv).

Each check runs against a throwaway rpm database or keyring holding only the keys pinned for one
repository, so a package or metadata file signed by any other key fails. Only public keys are ever
handled: gpg never needs an agent here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from contract.errors import Error

UNCHECKED = "unchecked"  # the lock's `signature` of an RPM from a repo with `gpgcheck: false`
BATCH = 200  # RPM files per rpmkeys run: stays far below the argument length limit
HINT_KEYS = ("check the repo's gpgkey and fingerprints in the spec against the vendor's published "
             "fingerprint; never re-pin to make an error go away")
HINT_PACKAGE = ("the repository or the mirror serves a package its vendor did not sign with the pinned "
                "key: use another mirror, or pin the right key; `gpgcheck: false` on the repo (recorded in "
                "the lock, shown in the SBOM and the evidence report) is the explicit opt-out")
_SIG_LINE = re.compile(r"^\s*(?P<what>.*Signature), key ID (?P<keyid>[0-9a-fA-F]+): (?P<status>\S+)")
_DIGEST_LINE = re.compile(r"^\s*(?P<what>.*digest): (?P<status>\S+)")


@dataclass(frozen=True)
class KeyFile:
    """An armored public key file and the keys in it."""

    path: Path
    fingerprints: tuple[str, ...]  # primary keys, upper-case hex (what a spec pins)
    subkeys: Mapping[str, str]  # fingerprint of every key and subkey -> its primary's fingerprint

    def primary_for(self, key_id: str) -> str | None:
        """The primary fingerprint a (short or long) key ID belongs to, if the file holds it."""
        key_id = key_id.upper()
        return next((p for f, p in self.subkeys.items() if f.endswith(key_id)), None)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        package = "rpm" if name.startswith("rpm") else "gnupg (gpg, gpgv)"
        raise Error(f"{name} is not installed", context="checking OpenPGP signatures",
                    hint=f"install {package}: apt-get install rpm gnupg / dnf install rpm gnupg2")
    return path


def _run(argv: Sequence[str], home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, GNUPGHOME=str(home), LC_ALL="C")
    return subprocess.run(list(argv), env=env, capture_output=True, text=True, check=False)


def read_key(path: Path, what: str) -> KeyFile:
    """The fingerprints in an armored (or binary) public key file; an Error if it holds none."""
    with tempfile.TemporaryDirectory(prefix="bundler-gpg-") as home:
        os.chmod(home, 0o700)
        r = _run([_tool("gpg"), "--batch", "--with-colons", "--show-keys", str(path)], Path(home))
    primaries: list[str] = []
    subkeys: dict[str, str] = {}
    kind = None
    for line in r.stdout.splitlines():
        fields = line.split(":")
        if fields[0] in ("pub", "sub"):
            kind = fields[0]
        elif fields[0] == "fpr" and kind is not None:
            fpr = fields[9].upper()
            if kind == "pub":
                primaries.append(fpr)
            subkeys[fpr] = primaries[-1]
            kind = None
    if r.returncode != 0 or not primaries:
        raise Error(f"no OpenPGP public key in {what}", context="reading a repository signing key",
                    details=[line for line in r.stderr.splitlines()[-5:]],
                    hint="the gpgkey URL must serve the vendor's armored public key")
    return KeyFile(Path(path), tuple(primaries), subkeys)


def check_pinned(key: KeyFile, repo: str, url: str, pinned: Sequence[str]) -> None:
    """Refuse a key file whose keys are not exactly the fingerprints the spec pins for the repo."""
    if set(key.fingerprints) == {p.upper() for p in pinned}:
        return
    raise Error(f"repo {repo!r}: the signing key at {url} is not the pinned one",
                context=f"checking the signing key of repo {repo!r}",
                details=[f"expected fingerprint: {', '.join(pinned) or '(none pinned)'}",
                         f"actual fingerprint:   {', '.join(key.fingerprints)}"],
                hint=HINT_KEYS)


# ---------------------------------------------------------------- RPM signatures


@dataclass(frozen=True)
class _Checked:
    signers: tuple[str, ...]  # primary fingerprints of the signatures that were OK
    problems: tuple[str, ...]


def _parse_rpmkeys(stdout: str) -> dict[str, list[str]]:
    """rpmkeys -Kv output -> file -> its indented result lines."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = blocks.setdefault(line[:-1], [])
        elif current is not None and line.strip():
            current.append(line.strip())
    return blocks


def _judge(lines: Sequence[str], keys: Sequence[KeyFile]) -> _Checked:
    """What one package's rpmkeys lines mean: who signed it, and what is wrong."""
    signers: list[str] = []
    problems: list[str] = []
    for line in lines:
        m = _SIG_LINE.match(line)
        if m:
            key_id = m.group("keyid").lower()
            if m.group("status") == "OK":
                primary = next((p for k in keys for p in [k.primary_for(key_id)] if p), None)
                if primary is None:  # cannot happen with a db holding only these keys
                    problems.append(f"key ID {key_id} verified but is not a pinned key")
                else:
                    signers.append(primary)
            elif m.group("status") == "NOKEY":
                problems.append(f"signed with key ID {key_id}, which is not a key pinned for the repo")
            else:
                problems.append(f"{m.group('what')} by key ID {key_id} is {m.group('status')} "
                                "(the file was changed after it was signed)")
            continue
        m = _DIGEST_LINE.match(line)
        if m and m.group("status") != "OK":
            problems.append(f"{m.group('what')} is {m.group('status')} (the file is damaged or was altered)")
    if not signers and not problems:
        problems.append("unsigned (no OpenPGP signature at all)")
    return _Checked(tuple(dict.fromkeys(signers)), tuple(problems))


def verify_rpms(files: Sequence[tuple[str, Path]], keys: Sequence[KeyFile], repo: str) -> dict[str, str]:
    """Check (name, path) RPMs against exactly `keys`; name -> signer's fingerprint, or one Error for all."""
    if not files:
        return {}
    if not keys:
        raise Error(f"repo {repo!r} has gpgcheck on but no pinned key", context="checking RPM signatures",
                    hint="give the repo gpgkey and fingerprints in the spec")
    rpmkeys = _tool("rpmkeys")
    signed: dict[str, str] = {}
    failures: list[str] = []
    bad: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bundler-rpmdb-") as db:
        for key in keys:
            r = _run([rpmkeys, "--dbpath", db, "--import", str(key.path)], Path(db))
            if r.returncode != 0:
                raise Error(f"rpmkeys cannot import the key of repo {repo!r}",
                            context="checking RPM signatures",
                            details=(r.stderr or r.stdout).splitlines()[-5:],
                            hint="rpm reads RSA and DSA v4 keys; check the repo's gpgkey")
        for start in range(0, len(files), BATCH):
            batch = files[start:start + BATCH]
            r = _run([rpmkeys, "--dbpath", db, "-Kv", *(str(p) for _, p in batch)], Path(db))
            blocks = _parse_rpmkeys(r.stdout)
            for name, path in batch:
                lines = blocks.get(str(path))
                if lines is None:
                    reason = r.stderr.strip()[-200:] or "no output"
                    problems: Sequence[str] = [f"rpmkeys could not read it ({reason})"]
                else:
                    checked = _judge(lines, keys)
                    problems = checked.problems
                if problems:
                    bad.append(name)
                    failures.extend(f"{name} (repo {repo}): {p}" for p in problems)
                else:
                    signed[name] = checked.signers[0]
    if failures:
        plural = "s" if len(bad) > 1 else ""
        raise Error(f"{len(bad)} RPM{plural} of repo {repo!r} failed the signature check: " + ", ".join(bad),
                    context=f"checking RPM signatures against the keys pinned for repo {repo!r}",
                    details=failures + [_pinned(repo, keys)],
                    hint=HINT_PACKAGE)
    return signed


def _pinned(repo: str, keys: Sequence[KeyFile]) -> str:
    return f"pinned for {repo}: {', '.join(f for k in keys for f in k.fingerprints)}"


# ---------------------------------------------------------------- detached signatures


def verify_detached(data: Path, signature: Path, keys: Sequence[KeyFile], what: str, repo: str) -> str:
    """Check an armored detached signature (repomd.xml.asc) with only `keys`; the signer's fingerprint."""
    gpg, gpgv = _tool("gpg"), _tool("gpgv")
    with tempfile.TemporaryDirectory(prefix="bundler-gpgv-") as home:
        os.chmod(home, 0o700)
        rings = []
        for i, key in enumerate(keys):
            ring = Path(home) / f"key{i}.gpg"
            r = _run([gpg, "--batch", "--yes", "--dearmor", "--output", str(ring), str(key.path)], Path(home))
            if r.returncode != 0:  # already binary
                shutil.copyfile(key.path, ring)
            rings += ["--keyring", str(ring)]
        r = _run([gpgv, "--status-fd", "1", *rings, str(signature), str(data)], Path(home))
    status = [line.split()[1:] for line in r.stdout.splitlines() if line.startswith("[GNUPG:] ")]
    valid = [s for s in status if s[0] == "VALIDSIG"]
    if r.returncode == 0 and valid:
        return valid[0][-1].upper()  # the primary key's fingerprint
    details = []
    for s in status:
        if s[0] == "BADSIG":
            details.append(f"BAD signature by key ID {s[1]}: {what} is not what was signed")
        elif s[0] in ("ERRSIG", "NO_PUBKEY") and len(s) > 1:
            details.append(f"signed with key ID {s[1]}, which is not a key pinned for repo {repo!r}")
        elif s[0] == "NODATA":
            details.append(f"{signature.name} holds no OpenPGP signature")
    details = list(dict.fromkeys(details)) or [line for line in r.stderr.splitlines()[-5:]]
    raise Error(f"repo {repo!r}: the signature of {what} does not verify", context=f"checking {what}",
                details=details + [_pinned(repo, keys)],
                hint="the mirror serves metadata its vendor did not sign (stale or altered); "
                     "use another mirror or retry later")


# ---------------------------------------------------------------- repositories


@dataclass(frozen=True)
class RepoTrust:
    """What a repository's packages are checked against: its pinned keys, or nothing (gpgcheck off)."""

    repo: str
    gpgcheck: bool
    keys: tuple[KeyFile, ...] = ()
    key_url: str | None = None
    key_sha256: str | None = None
    key_size: int | None = None

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(f for k in self.keys for f in k.fingerprints)


Fetcher = Callable[[str, "str | None", "int | None"], "tuple[Path, str, int]"]
"""(url, pinned sha256 or None, size or None) -> (cached path, sha256, size): downloads through mirrors."""


def trust_for(repos: Iterable, fetch_key: Fetcher, pins: Mapping[str, tuple[str, int]] | None = None
              ) -> dict[str, RepoTrust]:
    """Download each repo's key (once per URL and pin), check it against the spec's fingerprints.

    pins: repo name -> (sha256, size) of its key file as locked. Returns repo name -> RepoTrust.
    """
    pins = pins or {}
    got: dict[tuple, tuple[Path, str, int]] = {}
    out: dict[str, RepoTrust] = {}
    for r in repos:
        if not r.gpgcheck:
            out[r.name] = RepoTrust(r.name, False)
            continue
        if not r.gpgkey or not r.fingerprints:
            raise Error(f"repo {r.name!r} has gpgcheck on but pins no key",
                        context=f"checking the signing key of repo {r.name!r}",
                        hint="add gpgkey (the armored key URL) and fingerprints (full, 40 hex digits) to the "
                             "repo; or, knowingly, gpgcheck: false")
        sha, size = pins.get(r.name, (None, None))
        if (r.gpgkey, sha) not in got:
            got[(r.gpgkey, sha)] = fetch_key(r.gpgkey, sha, size)
        path, sha256, size = got[(r.gpgkey, sha)]
        key = read_key(path, r.gpgkey)
        check_pinned(key, r.name, r.gpgkey, r.fingerprints)
        out[r.name] = RepoTrust(r.name, True, (key,), r.gpgkey, sha256, size)
    return out


def repomd_status(trust: RepoTrust, repomd: bytes, asc: bytes | None) -> str:
    """repomd.xml checked against its .asc with the repo's keys: signed, unsigned (no .asc) or unchecked."""
    if not trust.gpgcheck:
        return "unchecked"
    if asc is None:
        return "unsigned"
    with tempfile.TemporaryDirectory(prefix="bundler-repomd-") as tmp:
        data, sig = Path(tmp) / "repomd.xml", Path(tmp) / "repomd.xml.asc"
        data.write_bytes(repomd)
        sig.write_bytes(asc)
        verify_detached(data, sig, trust.keys, f"repo {trust.repo!r}'s repodata/repomd.xml", trust.repo)
    return "signed"
