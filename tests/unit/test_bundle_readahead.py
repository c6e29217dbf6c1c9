"""The verifier's read-ahead thread: every chunk in order, errors handed over, stoppable at any point."""

from __future__ import annotations

import io
import threading

import pytest
import zstandard

from contract.bundle.tarstream import ReadAhead


def _all(read) -> bytes:
    out = []
    while True:
        chunk = read(1 << 20)
        if not chunk:
            return b"".join(out)
        out.append(chunk)


def test_reads_everything_in_order_then_empty():
    data = bytes(range(256)) * 40_000
    src = io.BytesIO(data)
    ahead = ReadAhead(src.read, chunk=4096, depth=2)
    assert _all(ahead.read) == data
    assert ahead.read(10) == b"" and ahead.read(10) == b""
    ahead.stop()


def test_decompresses_a_zstd_stream_like_the_plain_reader():
    data = b"kubelet " * 500_000
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(zstandard.ZstdCompressor().compress(data)))
    ahead = ReadAhead(reader.read)
    assert _all(ahead.read) == data
    ahead.stop()


def test_an_error_in_the_thread_is_raised_by_the_read_that_reaches_it():
    chunks = [b"a" * 10, b"b" * 10]

    def read(n: int) -> bytes:
        if chunks:
            return chunks.pop(0)
        raise zstandard.ZstdError("corrupt block")

    ahead = ReadAhead(read, depth=1)
    assert ahead.read(10) == b"a" * 10 and ahead.read(10) == b"b" * 10
    with pytest.raises(zstandard.ZstdError, match="corrupt block"):
        ahead.read(10)
    assert ahead.read(10) == b""  # it ended: no second error, no hang
    ahead.stop()


def test_stop_while_the_queue_is_full_ends_the_thread():
    calls = []

    def read(n: int) -> bytes:
        calls.append(n)
        return b"x" * n

    ahead = ReadAhead(read, chunk=16, depth=2)
    assert ahead.read(16) == b"x" * 16
    ahead.stop()
    assert not any(t.name == "bundle-read-ahead" and t.is_alive() for t in threading.enumerate())
    done = len(calls)
    assert done <= 5  # bounded: it never read more than the queue holds plus the chunk in hand
