"""Parallel, resumable, verified HTTP downloads into the cache (Range, retries with backoff)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Tuple, Union

import requests
import urllib3

from bundler.cache import CHUNK, Cache, hex_of
from bundler.sources import Progress, ProgressLike, as_progress
from bundler.spec import SHA256_RE, Binary, Mirrors, UrlMirror
from contract.errors import DigestMismatch, Error

Timeout = Union[float, Tuple[float, float]]
DEFAULT_TIMEOUT: Tuple[float, float] = (10.0, 60.0)  # connect, between bytes
RELOCK_HINT = ("if the upstream file really changed, review it and re-lock with `bundler lock`; "
               "otherwise the mirror or the network served wrong content (nothing was stored)")
# what a flaky network or an overloaded server looks like; everything else is a hard error
_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
              urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True)
class Item:
    """One file to download: its upstream URL (its name), the URL actually fetched, and its pin."""

    url: str
    fetch_url: str
    rule: Optional[UrlMirror] = None
    sha256: Optional[str] = None
    size: Optional[int] = None
    name: Optional[str] = None

    @property
    def label(self) -> str:
        return self.name or self.url


def item(url: str, mirrors: Mirrors, sha256: Optional[str] = None, size: Optional[int] = None,
         name: Optional[str] = None) -> Item:
    """An Item for an upstream URL, with the mirror rules applied."""
    fetch_url, rule = mirrors.url_for(url)
    return Item(url, fetch_url, rule, hex_of(sha256) if sha256 else None, size, name)


@dataclass(frozen=True)
class Result:
    """One artifact in the cache."""

    url: str
    sha256: str
    size: int
    path: Path
    cached: bool  # it was in the cache already: no request at all
    downloaded_bytes: int = 0
    resumed_from: int = 0  # bytes of a previous partial download that were kept
    attempts: int = 0


@dataclass
class Stats:
    """What a batch of downloads did."""

    downloaded_bytes: int = 0
    cache_hits: int = 0
    results: List[Result] = field(default_factory=list)

    def add(self, result: Result) -> None:
        self.results.append(result)
        self.downloaded_bytes += result.downloaded_bytes
        self.cache_hits += int(result.cached)

    def merge(self, other: "Stats") -> "Stats":
        for r in other.results:
            self.add(r)
        return self


@dataclass(frozen=True)
class Policy:
    """How hard to try: retries, backoff (sleep injectable so tests do not wait), timeouts."""

    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    timeout: Timeout = DEFAULT_TIMEOUT

    def delay(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))


class Interrupted(Exception):
    """The batch was stopped (another download failed, or the user interrupted)."""


class _Transient(Exception):
    """A failure worth retrying: connection reset, timeout, 5xx."""


class _Restart(Exception):
    """The partial file cannot be resumed; start again from byte 0 (not counted as an attempt)."""


def make_session(jobs: int = 4) -> requests.Session:
    """A session whose connection pool fits `jobs` parallel downloads."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=max(10, jobs), pool_maxsize=max(10, jobs))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def download(
    url_items: Iterable[Item],
    cache: Cache,
    session: requests.Session,
    jobs: int = 4,
    retries: int = 5,
    backoff: float = 0.5,
    progress: ProgressLike = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    timeout: Timeout = DEFAULT_TIMEOUT,
    stop: Optional[threading.Event] = None,
    label: str = "downloads",
) -> Stats:
    """Download every item into the cache in parallel; fail fast, keeping partial files for a re-run."""
    items = list(url_items)
    sink = as_progress(progress)
    policy = Policy(retries=retries, backoff=backoff, sleep=sleep, timeout=timeout)
    stop = stop or threading.Event()
    sizes = [i.size for i in items]
    sink.begin(label, len(items), sum(sizes) if None not in sizes else None)  # type: ignore[arg-type]
    results: List[Optional[Result]] = [None] * len(items)
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="download") as pool:
            futures = {pool.submit(download_one, it, cache, session, policy, sink, stop): n
                       for n, it in enumerate(items)}
            try:
                done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            except BaseException:  # KeyboardInterrupt: let the workers stop between chunks
                stop.set()
                for f in futures:
                    f.cancel()
                raise
            if pending:  # something failed: stop the rest, they resume next time
                stop.set()
                for f in pending:
                    f.cancel()
                wait(pending)
            errors: List[BaseException] = []
            for f, n in futures.items():
                if f.cancelled():
                    continue
                exc = f.exception()
                if exc is None:
                    results[n] = f.result()
                elif not isinstance(exc, Interrupted):
                    errors.append(exc)
            if errors:
                raise _combine(errors)
    finally:
        sink.end()
    stats = Stats()
    for r in results:
        assert r is not None
        stats.add(r)
    return stats


def _combine(errors: List[BaseException]) -> BaseException:
    first = errors[0]
    if isinstance(first, Error) and len(errors) > 1:
        first.details.extend(f"also failed: {e.message if isinstance(e, Error) else e}" for e in errors[1:])
    return first


def download_one(it: Item, cache: Cache, session: requests.Session, policy: Policy = Policy(),
                 progress: Optional[Progress] = None, stop: Optional[threading.Event] = None) -> Result:
    """Download one item into the cache unless it is there already; resume its partial file if any."""
    progress = progress or Progress()
    if it.sha256 and cache.has(it.sha256, it.size):
        progress.finish(it.label, cached=True)
        return _cached(it, cache)
    key = f"sha256-{it.sha256}" if it.sha256 else "url-" + hashlib.sha256(it.url.encode()).hexdigest()
    partial = cache.partial(key)
    with _locked(partial) as f:
        # another build may have finished this file while we waited for the lock
        if it.sha256 and cache.has(it.sha256, it.size):
            progress.finish(it.label, cached=True)
            return _cached(it, cache)
        progress.start(it.label, it.size)
        result = _Download(it, f, partial, cache, session, policy, progress, stop or threading.Event()).run()
    progress.finish(it.label, cached=False)
    return result


def _cached(it: Item, cache: Cache) -> Result:
    assert it.sha256 is not None
    path = cache.path(it.sha256)
    return Result(it.url, it.sha256, path.stat().st_size, path, True)


class _locked:
    """Open and exclusively lock a partial file, so two builds never append to the same one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = None

    def __enter__(self):
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.file = os.fdopen(fd, "r+b", buffering=0)
                return self.file
            os.close(fd)  # the holder published (renamed) it meanwhile: lock the new file instead

    def __exit__(self, *exc) -> None:
        self.file.close()


class _Download:
    """The state of one download across attempts: the partial file, its hash so far, counters."""

    def __init__(self, it: Item, f, partial: Path, cache: Cache, session: requests.Session, policy: Policy,
                 progress: Progress, stop: threading.Event) -> None:
        self.it, self.f, self.partial, self.cache = it, f, partial, cache
        self.session, self.policy, self.progress, self.stop = session, policy, progress, stop
        self.downloaded = 0
        self.hash = hashlib.sha256()
        self.resumed_from = self._hash_existing()

    def _hash_existing(self) -> int:
        # the prefix of an earlier run is re-hashed (streaming) so the final check covers every byte
        self.f.seek(0)
        n = 0
        for chunk in iter(lambda: self.f.read(CHUNK), b""):
            self.hash.update(chunk)
            n += len(chunk)
        return n

    def _truncate(self) -> None:
        self.f.seek(0)
        self.f.truncate()
        self.hash = hashlib.sha256()
        self.resumed_from = 0

    def run(self) -> Result:
        attempts = 0
        fresh = self.resumed_from == 0
        while True:
            attempts += 1
            try:
                self._attempt()
            except _Restart:
                self._truncate()
                fresh = True
                attempts -= 1
                continue
            except _Transient as e:
                if attempts > self.policy.retries:
                    raise self._gave_up(attempts, str(e)) from None
                self.policy.sleep(self.policy.delay(attempts))
                continue
            actual, size = self.hash.hexdigest(), self.f.tell()
            if self._matches(actual, size):
                break
            if not fresh:  # a leftover partial from an earlier run may be what is wrong: one clean retry
                self._truncate()
                fresh = True
                continue
            self._truncate()
            self.partial.unlink()  # nothing of a refused download is kept (we still hold its lock)
            raise self._mismatch(actual, size)
        self.f.flush()
        path = self.cache.publish_partial(self.partial, actual)
        return Result(self.it.url, actual, size, path, False, self.downloaded, self.resumed_from, attempts)

    def _matches(self, actual: str, size: int) -> bool:
        it = self.it
        return (it.sha256 is None or actual == it.sha256) and (it.size is None or size == it.size)

    def _attempt(self) -> None:
        it = self.it
        offset = self.f.seek(0, os.SEEK_END)
        # identity: the pin is over the bytes as published, never a transparently decompressed body
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            resp = self.session.get(it.fetch_url, headers=headers, stream=True, timeout=self.policy.timeout)
        except _TRANSIENT as e:
            raise _Transient(_reason(e)) from None
        except requests.RequestException as e:
            raise Error(f"cannot download {it.url}: {_reason(e)}", context=f"downloading {it.fetch_url}",
                        details=_rule_details(it)) from None
        with resp:
            status = resp.status_code
            if status in (404, 410):
                raise not_found(it, status)
            if status == 416 and offset:
                raise _Restart()
            if status >= 500 or status in (408, 429):
                raise _Transient(f"HTTP {status} {resp.reason}")
            if status not in (200, 206):
                raise Error(f"cannot download {it.url}: HTTP {status} {resp.reason}",
                            context=f"downloading {it.fetch_url}", details=_rule_details(it))
            total = self._expected_total(resp, offset)
            self._stream(resp, total)

    def _expected_total(self, resp: requests.Response, offset: int) -> Optional[int]:
        if resp.status_code == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                raise _Restart()  # a range we did not ask for: do not splice it in
            return None if m.group(3) == "*" else int(m.group(3))
        if offset:
            self._truncate()  # the server ignored Range and sends everything: start clean
        length = resp.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else None

    def _stream(self, resp: requests.Response, total: Optional[int]) -> None:
        # read1: whatever the socket has (at most CHUNK), written before the next read, so a reset loses no
        # byte received (read(CHUNK) would drop the part of a chunk it had when the connection broke)
        try:
            while True:
                chunk = resp.raw.read1(CHUNK, decode_content=False)
                if not chunk:
                    break
                self.f.write(chunk)
                self.hash.update(chunk)
                self.downloaded += len(chunk)
                self.progress.update(self.it.label, len(chunk))
                if self.stop.is_set():
                    raise Interrupted(self.it.url)
        except _TRANSIENT as e:
            raise _Transient(_reason(e)) from None
        if total is not None and self.f.tell() != total:
            raise _Transient(f"connection closed after {self.f.tell()} of {total} bytes")

    def _mismatch(self, actual: str, size: int) -> Error:
        it = self.it
        details = [f"expected sha256: {it.sha256 or '(not pinned)'}", f"actual sha256:   {actual}"]
        if it.size is not None:
            details.append(f"expected size: {it.size} bytes, actual: {size}")
        if it.fetch_url != it.url:
            details.append(f"fetched from {it.fetch_url}")
        return DigestMismatch(f"sha256 mismatch for {it.url}", context=f"verifying {it.label}", details=details,
                     hint=RELOCK_HINT)

    def _gave_up(self, attempts: int, last: str) -> Error:
        it = self.it
        return Error(f"cannot download {it.url}: gave up after {attempts} attempts (last: {last})",
                     context=f"downloading {it.fetch_url}", details=_rule_details(it),
                     hint="the server keeps failing: retry later or point a mirror (mirrors.urls) at a "
                          "working copy; what was downloaded so far is kept and a re-run resumes")


def not_found(it: Item, status: int = 404) -> Error:
    """The 404 error: names the mirror rule that produced the URL, or says none applied."""
    if it.rule is not None:
        hint = f"the mirror rule rewrote the URL: check that {it.rule.to} holds what {it.rule.from_} does"
    else:
        hint = "check the URL in the spec, or add a mirrors.urls rule pointing at a copy"
    return Error(f"not found (HTTP {status}): {it.fetch_url}", context=f"downloading {it.label}",
                 details=[f"upstream URL: {it.url}", *_rule_details(it)], hint=hint)


def _rule_details(it: Item) -> List[str]:
    if it.rule is None:
        return ["no mirror rule applied (fetched from the upstream URL itself)"]
    return [f"mirror rule: {it.rule.from_} -> {it.rule.to}"]


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) < 300 else text[:300] + "…"


# --- upstream digests --------------------------------------------------------------------------

def parse_digest_file(text: str, filename: str) -> Optional[str]:
    """The sha256 for `filename` in a `.sha256` file (bare hex) or a SHA256SUMS list; None if absent."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for line in lines:
        parts = line.split()
        digest = parts[0].lower()
        if not SHA256_RE.match(digest):
            continue
        if len(parts) == 1:
            if len(lines) == 1:
                return digest
            continue
        # `sha256sum -b` marks binary mode with '*'; lists may carry a ./ or a directory
        listed = parts[-1].lstrip("*").rsplit("/", 1)[-1]
        if listed == filename:
            return digest
    return None


def fetch_upstream_digest(binary: Binary, mirrors: Mirrors, session: requests.Session, *,
                          retries: int = 5, backoff: float = 0.5,
                          sleep: Callable[[float], None] = time.sleep,
                          timeout: Timeout = DEFAULT_TIMEOUT) -> str:
    """The sha256 upstream publishes for a binary (its digest_url: .sha256 file or SHA256SUMS)."""
    if not binary.digest_url:
        raise Error(f"binary {binary.name} has no digest_url", context="taking a pin from upstream")
    it = item(binary.digest_url, mirrors, name=f"{binary.name} digest")
    policy = Policy(retries=retries, backoff=backoff, sleep=sleep, timeout=timeout)
    text = get_text(it, session, policy)
    digest = parse_digest_file(text, binary.filename)
    if digest is None:
        raise Error(f"no sha256 for {binary.filename} in {binary.digest_url}",
                    context=f"taking the pin of {binary.name} from upstream",
                    details=[f"fetched from {it.fetch_url}", *_rule_details(it)],
                    hint="check digest_url in the spec, or pin `sha256:` in the spec instead")
    return digest


def get_text(it: Item, session: requests.Session, policy: Policy = Policy(), limit: int = 1 << 20) -> str:
    """GET a small text document (digest lists, metadata) with retries; never more than `limit` bytes."""
    attempts = 0
    while True:
        attempts += 1
        try:
            resp = session.get(it.fetch_url, timeout=policy.timeout, stream=True)
            with resp:
                if resp.status_code in (404, 410):
                    raise not_found(it, resp.status_code)
                if resp.status_code >= 500 or resp.status_code in (408, 429):
                    raise _Transient(f"HTTP {resp.status_code} {resp.reason}")
                if resp.status_code != 200:
                    raise Error(f"cannot download {it.url}: HTTP {resp.status_code} {resp.reason}",
                                context=f"downloading {it.fetch_url}", details=_rule_details(it))
                body = resp.raw.read(limit + 1, decode_content=True)
        except _TRANSIENT as e:
            last = _reason(e)
        except _Transient as e:
            last = str(e)
        else:
            if len(body) > limit:
                raise Error(f"{it.url} is larger than {limit} bytes; not a digest file",
                            context=f"reading {it.label}")
            return body.decode("utf-8", errors="replace")
        if attempts > policy.retries:
            raise Error(f"cannot download {it.url}: gave up after {attempts} attempts (last: {last})",
                        context=f"downloading {it.fetch_url}", details=_rule_details(it),
                        hint="the server keeps failing: retry later or use a mirror")
        policy.sleep(policy.delay(attempts))
