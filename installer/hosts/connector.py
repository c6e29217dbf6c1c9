"""The connector protocol every executor uses (run, put, get, close), and the shell logic both share.

A connector runs POSIX sh command lines on one host. `put` and `get` are built on `run` (a small
script per call, content on stdin/stdout), so the SSH and the local connector behave the same way
and their quoting is tested once, here.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import secrets
import shlex
import tarfile
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import (
    BinaryIO,
    Callable,
    Dict,
    Hashable,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

try:
    from typing import Protocol
except ImportError:  # pragma: no cover - Python < 3.8
    Protocol = object  # type: ignore

from contract.errors import Error

Command = Union[str, Sequence[str]]
Input = Union[bytes, str, None]
Writer = Callable[[BinaryIO], None]  # writes a stream of any length (a tar of many files) to the file it is given
Stdin = Union[bytes, Path, Writer, None]  # what a connector's primitive feeds the command: bytes, a file, a writer

TIMEOUT_RC = 124  # coreutils `timeout` exit status when the limit was hit
KILL_GRACE = 5  # seconds between TERM and KILL for the remote `timeout`, and extra wait on our side
MISSING_RC = 44  # `get` of a file that does not exist
STDERR_TAIL = 15  # lines of stderr kept in an error


@dataclass(frozen=True)
class Result:
    """What a command did: exit status and its decoded output."""

    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


class Connector(Protocol):
    """The protocol: run commands, write and read whole files, close."""

    name: str

    def run(self, cmd: Command, *, sudo: Optional[bool] = None, timeout: Optional[float] = None,
            check: bool = True, input: Input = None) -> Result: ...

    def put(self, path: str, content: bytes, mode: int, owner: str = "root", group: str = "root") -> None: ...

    def put_file(self, path: str, local: Path, mode: int, owner: str = "root", group: str = "root") -> None: ...

    def put_many(self, uploads: Sequence["Upload"]) -> None: ...

    def get(self, path: str) -> Optional[bytes]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Upload:
    """One file of a batch write (put_many): remote path, content (bytes, or a local file streamed), mode, owner."""

    path: str
    content: Union[bytes, Path]
    mode: int
    owner: str = "root"
    group: str = "root"


class PartialWrite(Error):
    """put_many stopped: the first `written` files of the batch are in place, the others untouched."""

    def __init__(self, message: str, written: int, **kw) -> None:
        super().__init__(message, **kw)
        self.written = written


# -- pure helpers (unit-tested) -------------------------------------------------------------------

def to_shell(cmd: Command) -> str:
    """A command line for sh: a string is taken as written, a list is quoted word by word."""
    if isinstance(cmd, str):
        return cmd
    words = list(cmd)
    if not words:
        raise ValueError("empty command")
    return " ".join(shlex.quote(str(w)) for w in words)


def wrap(cmd: Command, *, sudo: bool = False, timeout: Optional[float] = None) -> str:
    """The full command line sent to a host: sh -c, under `timeout` and `sudo -n` when asked."""
    line = "sh -c " + shlex.quote(to_shell(cmd))
    if timeout is not None:
        # the limit is enforced on the host too, so a hung command does not outlive the installer's wait
        line = f"timeout -k {KILL_GRACE} {_seconds(timeout)} {line}"
    if sudo:
        line = "sudo -n -- " + line  # -n: fail at once instead of prompting for a password
    return line


def _seconds(t: float) -> str:
    return str(int(t)) if float(t).is_integer() else f"{t:.3f}"


def check_path(path: str) -> str:
    """Remote paths must be absolute and normalized: no relative or `..` surprises on the host."""
    if not isinstance(path, str) or not path.startswith("/") or posixpath.normpath(path) != path \
            or path == "/" or "\0" in path or "\n" in path:
        raise Error(f"not an absolute, normalized file path: {path!r}",
                    hint="paths on hosts are absolute, e.g. /etc/kubernetes/kubelet.conf")
    return path


def put_script(path: str, mode: int, owner: Optional[str] = "root", group: Optional[str] = "root") -> str:
    """sh script that atomically replaces path with stdin: temp file next to it, chmod/chown, rename."""
    check_path(path)
    d, base = posixpath.split(path)
    q = shlex.quote
    lines = [
        "set -e",
        f"mkdir -p -- {q(d or '/')}",
        f"t=$(mktemp {q(posixpath.join(d, '.' + base[:40] + '.k8s-offline.XXXXXX'))})",
        "trap 'rm -f -- \"$t\"' EXIT",
        'cat > "$t"',
        f'chmod {mode:04o} "$t"',
    ]
    if owner or group:
        spec = (owner or "") + (":" + group if group else "")
        lines.append(f'chown {q(spec)} "$t"')
    lines += [f'mv -f -T -- "$t" {q(path)}', "trap - EXIT"]  # -T: onto a directory fails, never into it
    return "\n".join(lines) + "\n"


def get_script(path: str) -> str:
    """sh script printing the file, or exiting MISSING_RC when it does not exist."""
    p = shlex.quote(check_path(path))
    return f"if [ -e {p} ]; then exec cat -- {p}; else exit {MISSING_RC}; fi"


def temp_name(path: str, nonce: str, i: int) -> str:
    """The temp file next to `path` that a batch write renames into place (the `put_script` pattern)."""
    d, base = posixpath.split(check_path(path))
    return posixpath.join(d, f".{base[:40]}.k8s-offline.{nonce}{i}")


def put_many_script(uploads: Sequence[Upload], nonce: str) -> str:
    """sh script writing every upload atomically from a tar stream on stdin (`tar_writer`): GNU tar extracts
    each member as a temp file next to its target (parents created, mode from the header, owned by root), the
    ones not root's are chown'd, then they are renamed into place in order, `written <i>` printed after each.
    On any failure the temp files are removed and what was renamed before stays (the printed lines say which)."""
    q = shlex.quote
    temps = [temp_name(u.path, nonce, i) for i, u in enumerate(uploads)]
    lines = ["set -e", "clean() { rm -f -- " + " ".join(q(t) for t in temps) + "; }", "trap clean EXIT",
             "tar -x -p -m --no-same-owner -C / -f -",
             # all or nothing before the first rename: a stream cut short (a local file unreadable) renames none
             "for t in " + " ".join(q(t) for t in temps) + '; do [ -f "$t" ] || exit 3; done']
    for u, t in zip(uploads, temps):
        if (u.owner or "root") != "root" or (u.group or "root") != "root":
            lines.append(f"chown {q((u.owner or '') + (':' + u.group if u.group else ''))} {q(t)}")
    for i, (u, t) in enumerate(zip(uploads, temps)):
        lines += [f"mv -f -T -- {q(t)} {q(u.path)}", f"echo written {i}"]
    lines += ["trap - EXIT"]
    return "\n".join(lines) + "\n"


def tar_writer(uploads: Sequence[Upload], nonce: str) -> Writer:
    """A Writer of the tar stream put_many_script reads: member i is upload i at its temp name (a local file is
    streamed, never read whole into memory)."""
    def write(f: BinaryIO) -> None:
        with tarfile.open(fileobj=f, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            for i, u in enumerate(uploads):
                info = tarfile.TarInfo(temp_name(u.path, nonce, i).lstrip("/"))
                info.mode, info.uid, info.gid, info.uname, info.gname = u.mode, 0, 0, "root", "root"
                if isinstance(u.content, Path):
                    try:
                        src = open(u.content, "rb")
                    except OSError as e:
                        raise Error(f"cannot read {u.content}: {e.strerror}", context="sending files to a host") from None
                    with src:
                        info.size = os.fstat(src.fileno()).st_size
                        tar.addfile(info, src)
                else:
                    info.size = len(u.content)
                    tar.addfile(info, io.BytesIO(u.content))
    return write


def written_count(stdout: str) -> int:
    """How many files of a batch put_many_script renamed into place (its `written <i>` lines, in order)."""
    n = 0
    for line in stdout.splitlines():
        if line.strip() == f"written {n}":
            n += 1
    return n


def short(cmd: Command, limit: int = 200) -> str:
    """A command for messages: one line, bounded length."""
    text = " ".join(to_shell(cmd).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tail(text: str, n: int = STDERR_TAIL) -> List[str]:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-n:]


_SUDO_PASSWORD = re.compile(r"sudo: (a password is required|a terminal is required|no tty present)")


def command_hint(rc: int, stderr: str, user: str) -> Optional[str]:
    """What to try for a failed command, recognised from its exit status and stderr."""
    if _SUDO_PASSWORD.search(stderr):
        return (f"sudo asks user {user!r} for a password: allow it without one "
                f"(e.g. '{user} ALL=(ALL) NOPASSWD:ALL' in /etc/sudoers.d/), or connect as root")
    if "is not in the sudoers file" in stderr or "not allowed to execute" in stderr:
        return f"user {user!r} may not use sudo: add a NOPASSWD sudoers rule, or connect as root"
    if rc == 127 or (rc == 126 and "ermission" not in stderr):
        return "a command is missing on the host: check the OS preparation phase and the installed packages"
    return None


def command_error(host: str, cmd: Command, rc: int, stderr: str, user: str, *,
                  what: Optional[str] = None) -> Error:
    """The Error for a command that exited non-zero: host, command, stderr tail, hint."""
    return Error(f"{host}: {what or 'command'} failed with exit status {rc}: {short(cmd)}",
                 context=f"running a command on {host}", details=tail(stderr),
                 hint=command_hint(rc, stderr, user) or f"run it by hand on {host} to see why")


def timeout_error(host: str, cmd: Command, timeout: float) -> Error:
    return Error(f"{host}: command did not finish within {_seconds(timeout)} s: {short(cmd)}",
                 context=f"running a command on {host}",
                 hint="the host may be overloaded or the command hangs; it was stopped: "
                      "check the host and re-run")


def _decode(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


# -- the shared implementation -------------------------------------------------------------------

class ShellConnector(ABC):
    """put/get/run in terms of one primitive: run a sh command line with stdin bytes, get bytes back."""

    name: str
    user: str = "root"
    sudo: bool = False

    @abstractmethod
    def _exec(self, line: str, stdin: Stdin, timeout: Optional[float],
              cmd: Command) -> Tuple[int, bytes, bytes]:
        """Run a wrapped command line; raise Error for transport failures and timeouts.

        stdin: bytes, or a local file (a Path) that is streamed, never read into memory."""

    def run(self, cmd: Command, *, sudo: Optional[bool] = None, timeout: Optional[float] = None,
            check: bool = True, input: Input = None) -> Result:
        """Run cmd (sh syntax if a string, argv if a list); raise Error if it fails and check is set."""
        rc, out, err = self._run_bytes(cmd, sudo=sudo, timeout=timeout, input=input)
        res = Result(rc, _decode(out), _decode(err))
        if check and rc != 0:
            raise command_error(self.name, cmd, rc, res.stderr, self.user)
        return res

    def _run_bytes(self, cmd: Command, *, sudo: Optional[bool] = None, timeout: Optional[float] = None,
                   input: Union[Input, Path, Writer] = None) -> Tuple[int, bytes, bytes]:
        use_sudo = self.sudo if sudo is None else sudo
        stdin = input.encode() if isinstance(input, str) else input
        rc, out, err = self._exec(wrap(cmd, sudo=use_sudo, timeout=timeout), stdin, timeout, cmd)
        if timeout is not None and rc == TIMEOUT_RC:
            raise timeout_error(self.name, cmd, timeout)
        return rc, out, err

    def put(self, path: str, content: bytes, mode: int, owner: str = "root", group: str = "root") -> None:
        """Write a whole file atomically (temp file next to it, chmod/chown, rename); creates parent dirs."""
        self._write(path, bytes(content), mode, owner, group)

    def put_file(self, path: str, local: Path, mode: int, owner: str = "root", group: str = "root") -> None:
        """Like put, with the content streamed from a local file (executables can be hundreds of MB)."""
        self._write(path, Path(local), mode, owner, group)

    def _write(self, path: str, content: Union[bytes, Path], mode: int, owner: str, group: str) -> None:
        rc, _out, err = self._run_bytes(put_script(path, mode, owner, group), input=content)
        if rc != 0:
            raise command_error(self.name, f"write {path}", rc, _decode(err), self.user,
                                what="writing a file")

    def put_many(self, uploads: Sequence[Upload]) -> None:
        """put/put_file of many files in one command (one round trip): a tar stream extracted next to the targets,
        each file renamed into place in order. Raises PartialWrite saying how many are in place when it fails."""
        uploads = list(uploads)
        if not uploads:
            return
        nonce = secrets.token_hex(6)
        rc, out, err = self._run_bytes(put_many_script(uploads, nonce), input=tar_writer(uploads, nonce))
        if rc != 0:
            done = written_count(_decode(out))
            e = command_error(self.name, f"write {len(uploads)} files", rc, _decode(err), self.user,
                              what="writing files")
            raise PartialWrite(e.message + f" ({done} of {len(uploads)} written, the first: "
                               f"{uploads[done].path} not)", done, context=e.context, details=e.details,
                               hint=e.hint)

    def get(self, path: str) -> Optional[bytes]:
        """A whole file's bytes, or None if it does not exist."""
        cmd = get_script(path)
        rc, out, err = self._run_bytes(cmd)
        if rc == MISSING_RC:
            return None
        if rc != 0:
            raise command_error(self.name, f"read {path}", rc, _decode(err), self.user, what="reading a file")
        return out

    def close(self) -> None:  # noqa: B027 - optional hook: most connectors hold nothing to release
        """Release the connection (nothing to do by default)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


H = TypeVar("H", bound=Hashable)
R = TypeVar("R")

def default_parallel(cpus: Optional[int]) -> int:
    """How many hosts are handled at once by default (`--jobs`) on a control host with `cpus` CPUs: an SSH
    session is I/O bound (the control host mostly waits on the remote command and the network), so 4 per CPU;
    at least 4 on a small control host, at most 32 so a large site does not start hundreds of ssh processes
    and parallel transfers at once."""
    return min(32, max(4, 4 * (cpus or 1)))


DEFAULT_PARALLEL = default_parallel(os.cpu_count())


def run_on(hosts: Iterable[H], fn: Callable[[H], R],
           max_parallel: int = DEFAULT_PARALLEL) -> Dict[H, Union[R, BaseException]]:
    """fn(host) for every host, at most max_parallel at once; {host: result or the exception it raised}."""
    hosts = list(hosts)
    if not hosts:
        return {}

    def call(h: H) -> Union[R, BaseException]:
        try:
            return fn(h)
        except Exception as e:  # collected per host: one unreachable host must not hide the others' results
            return e

    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(hosts)))) as pool:
        results = list(pool.map(call, hosts))
    return dict(zip(hosts, results))


def failures(results: Dict[H, Union[R, BaseException]]) -> Dict[H, BaseException]:
    """The hosts whose call raised, from a run_on result."""
    return {h: r for h, r in results.items() if isinstance(r, BaseException)}


@contextmanager
def feeding(stdin: Stdin) -> Iterator[dict]:
    """subprocess keyword arguments that feed `stdin`: input=bytes, stdin=the open file of a Path, or stdin=a
    pipe that a Writer fills from a thread (an error it raised is raised here once the command ended)."""
    if callable(stdin):
        yield from _piped(stdin)
        return
    if not isinstance(stdin, Path):
        yield {"input": stdin if stdin is not None else b""}
        return
    try:
        f = open(stdin, "rb")
    except OSError as e:
        raise Error(f"cannot read {stdin}: {e.strerror}", context="sending a file to a host") from None
    with f:
        yield {"stdin": f}


def _piped(writer: Writer) -> Iterator[dict]:
    r, w = os.pipe()
    failed: List[BaseException] = []

    def pump() -> None:
        try:
            with open(w, "wb") as f:
                writer(f)
        except BrokenPipeError:
            pass  # the command stopped reading: its exit status says why
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            failed.append(e)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        with open(r, "rb") as f:
            yield {"stdin": f}
    finally:
        t.join()
    if failed:
        raise failed[0]
