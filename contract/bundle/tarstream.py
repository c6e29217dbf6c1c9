"""A strict, streaming tar reader and writer for exactly what bundles contain: regular files only.

Reading parses each 512-byte header with tarfile.TarInfo.frombuf and handles pax 'x' headers itself,
so every member type other than a regular file is seen, named and refused rather than interpreted.
"""

from __future__ import annotations

import queue
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable, Optional

from contract.bundle import layout
from contract.errors import Error

BLOCK = 512
CHUNK = 1 << 20
MAX_PAX_SIZE = 1 << 20
MAX_TRAILING_ZEROS = 64 * BLOCK  # tar pads the end of archive to a record (20 blocks); allow some slack
_COPY_AGAIN = "copy the bundle again from the build host (or rebuild it)"

_REFUSED_TYPES = {
    tarfile.SYMTYPE: "a symlink",
    tarfile.LNKTYPE: "a hardlink",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a fifo",
    tarfile.DIRTYPE: "a directory",
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_LONGNAME: "a GNU long name",
    tarfile.GNUTYPE_LONGLINK: "a GNU long link",
    tarfile.GNUTYPE_SPARSE: "a GNU sparse file",
    tarfile.XGLTYPE: "a pax global header",
}


def file_header(path: str, size: int, mode: int, mtime: int) -> bytes:
    """The deterministic header block(s) of a regular file member (pax when a name or size needs it)."""
    info = tarfile.TarInfo(path)
    info.size = size
    info.mode = mode
    info.mtime = mtime
    info.type = tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def padding(size: int) -> bytes:
    """Zero bytes that pad a member's data to a whole block."""
    return b"\0" * (-size % BLOCK)


END_OF_ARCHIVE = b"\0" * (2 * BLOCK)


class ReadAhead:
    """A read(n) callable that reads ahead in a thread, `depth` chunks at most.

    Decompression releases the GIL, so the thread decompresses the next chunks while the caller hashes
    (and writes) the current one: a pass over the bundle takes about the longer of the two, not their sum.
    An exception in the thread is raised to the caller by the read that would have returned its chunk."""

    def __init__(self, read: Callable[[int], bytes], chunk: int = CHUNK, depth: int = 8) -> None:
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._run, args=(read, chunk), name="bundle-read-ahead", daemon=True)
        self._thread.start()

    def _run(self, read: Callable[[int], bytes], chunk: int) -> None:
        while not self._stop.is_set():
            try:
                item: object = read(chunk)
            except BaseException as e:  # handed to the reader, who raises it
                item = e
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not item or isinstance(item, BaseException):
                return

    def read(self, n: int = -1) -> bytes:
        """The next chunk (whatever its size: callers take what they get), b"" at the end."""
        if self._ended:
            return b""
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        if not item:
            self._ended = True
        return item

    def stop(self) -> None:
        """Stop reading ahead; once this returns the thread no longer touches the underlying stream."""
        self._stop.set()
        self._thread.join()


class Truncated(Exception):
    """The decompressed stream ended early."""


class Buffered:
    """Exact-size reads and chunked data from a read(n) callable, without per-byte Python work."""

    def __init__(self, read: Callable[[int], bytes], chunk: int = CHUNK) -> None:
        self._read = read
        self._chunk = chunk
        self._buf = memoryview(b"")
        self.offset = 0  # bytes consumed by callers

    def _fill(self) -> bool:
        if len(self._buf):
            return True
        data = self._read(self._chunk)
        if not data:
            return False
        self._buf = memoryview(data)
        return True

    def read_exact(self, n: int) -> bytes:
        """Exactly n bytes, or Truncated."""
        pieces = []
        for piece in self.chunks(n):
            pieces.append(bytes(piece))
        return b"".join(pieces)

    def chunks(self, n: int) -> Iterator[memoryview]:
        """Yield views covering exactly the next n bytes; each is valid until the next call."""
        while n > 0:
            if not self._fill():
                raise Truncated()
            take = min(n, len(self._buf))
            piece = self._buf[:take]
            self._buf = self._buf[take:]
            self.offset += take
            n -= take
            yield piece

    def skip(self, n: int) -> None:
        """Consume n bytes."""
        for _ in self.chunks(n):
            pass

    def rest(self, limit: int) -> tuple[int, bool]:
        """Consume everything left: (bytes seen up to limit + 1, whether they were all zero)."""
        seen, zeros = 0, True
        while seen <= limit and self._fill():
            piece = self._buf
            self._buf = memoryview(b"")
            seen += len(piece)
            zeros = zeros and not bytes(piece).strip(b"\0")
        return seen, zeros


@dataclass
class Member:
    """A member header: its name, its data size, and what it is."""

    name: str
    size: int
    kind: Optional[str]  # None for a regular file, else why it is refused, e.g. 'a symlink'
    offset: int  # of its header in the decompressed stream


def _parse_pax(data: bytes, where: int) -> dict[str, str]:
    """The records of a pax extended header ('<len> <key>=<value>\\n' each)."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space]) if space > pos else 0
        except ValueError:
            length = 0
        record = data[pos:pos + length]
        if length <= 0 or len(record) != length or not record.endswith(b"\n") or b"=" not in record:
            if not data[pos:].strip(b"\0"):  # zero padding after the last record
                break
            raise Error(f"malformed pax header at offset {where}", hint=_COPY_AGAIN)
        key, _, value = record[space - pos + 1:-1].partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def read_header(buf: Buffered) -> Optional[Member]:
    """The next member's header, or None at the end-of-archive marker; pax headers are applied."""
    pax: dict[str, str] = {}
    start = buf.offset
    while True:
        try:
            block = buf.read_exact(BLOCK)
        except Truncated:
            raise Error(f"bundle is truncated: the archive ends at offset {buf.offset} without its end marker",
                        hint=_COPY_AGAIN) from None
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.EOFHeaderError:
            if pax:
                raise Error(f"pax header at offset {start} is not followed by a member", hint=_COPY_AGAIN) from None
            return None
        except tarfile.HeaderError as e:
            raise Error(f"bad tar header at offset {buf.offset - BLOCK}: {e}",
                        hint=f"this is not a bundle, or it is damaged; {_COPY_AGAIN}") from None
        if info.type == tarfile.XHDTYPE:
            if info.size > MAX_PAX_SIZE:
                raise Error(f"pax header at offset {buf.offset - BLOCK} is too large ({info.size} bytes)")
            try:
                data = buf.read_exact(info.size)
                buf.skip(-info.size % BLOCK)
            except Truncated:
                raise Error("bundle is truncated inside a pax header", hint=_COPY_AGAIN) from None
            pax.update(_parse_pax(data, buf.offset))
            continue
        name, size = info.name, info.size
        if "path" in pax:
            name = pax["path"]
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise Error(f"member {name!r}: bad pax size {pax['size']!r}") from None
        kind = None
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            kind = _REFUSED_TYPES.get(info.type, f"an unknown member type {info.type!r}")
        elif any(key.startswith("GNU.sparse") for key in pax):
            kind = "a GNU sparse file"
        return Member(name, size, kind, start)


def refuse_reason(member: Member) -> Optional[str]:
    """Why a member can never be part of a bundle, or None."""
    if member.kind is not None:
        return f"is {member.kind}; a bundle contains only regular files"
    if member.name.startswith("/"):
        return "has an absolute path"
    if ".." in member.name.split("/"):
        return "has a '..' path component (path traversal)"
    problem = layout.path_problem(member.name)
    if problem:
        return f"has a bad path: {problem}"
    if member.size < 0:
        return "has a negative size"
    return None


def finish(buf: Buffered) -> None:
    """After the end marker: only zero padding may follow, in a bounded amount."""
    seen, zeros = buf.rest(MAX_TRAILING_ZEROS)
    if not zeros or seen > MAX_TRAILING_ZEROS:
        raise Error(f"trailing garbage after the end of the archive (offset {buf.offset})",
                    hint=f"the bundle was modified; {_COPY_AGAIN}")


class FrameCheck:
    """Follows zstd frame structure (headers and block sizes only) over the raw stream as it is read.

    A bundle is one or more zstd frames back to back (the writer starts a new frame where the kind of
    data changes). The decompressor does not complain when the final block or checksum is cut off,
    and reads any frames appended to the stream; this notices truncation and anything after the
    frames that is not a frame, at no real cost (the tar end marker catches content appended as frames).
    """

    _MAGIC = b"\x28\xb5\x2f\xfd"

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read_raw = read
        self.offset = 0
        self._want = 4  # header bytes still needed, or data bytes to skip
        self._state = "magic"
        self._acc = bytearray()
        self._checksum = False
        self._frames = 0  # complete frames before the current one

    def read(self, n: int = -1) -> bytes:
        """Read raw bytes, following the frame structure through them."""
        data = self._read_raw(n if n and n > 0 else CHUNK)
        if data:
            self._feed(memoryview(data))
        else:
            self.explain()
        return data

    def _feed(self, view: memoryview) -> None:
        pos = 0
        while pos < len(view):
            if self._state == "done":  # a bundle is one or more frames back to back
                self._state, self._want, self._frames = "magic", 4, self._frames + 1
            take = min(self._want, len(view) - pos)
            if self._state in ("block", "skip"):
                pos += take
                self._want -= take
                if self._want == 0:
                    self._next_after_data()
                continue
            self._acc += view[pos:pos + take]
            pos += take
            self._want -= take
            if self._want == 0:
                self._header_complete(self.offset + pos)
        self.offset += len(view)

    def _header_complete(self, at: int) -> None:
        acc = bytes(self._acc)
        self._acc.clear()
        if self._state == "magic":
            if acc != self._MAGIC and self._frames:
                raise Error(f"trailing garbage after the compressed stream (offset {at - 4})",
                            hint=f"the bundle was modified or two files were joined; {_COPY_AGAIN}")
            if acc != self._MAGIC:
                raise Error("not a zstd compressed bundle (bad magic number)",
                            hint="pass a .bundle.tar.zst file, one of its parts, or their directory")
            self._state, self._want = "descriptor", 1
        elif self._state == "descriptor":
            fhd = acc[0]
            single = bool(fhd & 0x20)
            self._checksum = bool(fhd & 0x04)
            fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
            rest = (0 if single else 1) + (0, 1, 2, 4)[fhd & 0x03] + fcs
            self._state, self._want = "rest", rest
            if rest == 0:
                self._state, self._want = "blockhdr", 3
        elif self._state == "rest":
            self._state, self._want = "blockhdr", 3
        elif self._state == "blockhdr":
            value = int.from_bytes(acc, "little")
            self._last = bool(value & 1)
            btype, bsize = (value >> 1) & 3, value >> 3
            if btype == 3:
                raise Error(f"corrupt compressed stream at offset {at} (reserved block type)", hint=_COPY_AGAIN)
            self._state, self._want = "block", (1 if btype == 1 else bsize)
            if self._want == 0:
                self._next_after_data()
        elif self._state == "checksum":
            self._state, self._want = "done", 0

    def _next_after_data(self) -> None:
        if not self._last:
            self._state, self._want = "blockhdr", 3
        elif self._checksum:
            self._state, self._want = "checksum", 4
        else:
            self._state, self._want = "done", 0

    def explain(self) -> None:
        """Raise the clearer error when the decompressor failed on a few stray bytes after the last frame."""
        if self._state == "magic" and self._frames:
            raise Error(f"trailing garbage after the compressed stream (offset {self.offset - len(self._acc)})",
                        hint=f"the bundle was modified or two files were joined; {_COPY_AGAIN}")

    def drain(self) -> None:
        """Read the raw stream to its end and raise unless it ended exactly with the frame."""
        while self.read(CHUNK):
            pass
        if self._state != "done":
            raise Error(f"bundle is truncated: the compressed stream ends early (at byte {self.offset})",
                        hint=_COPY_AGAIN)
