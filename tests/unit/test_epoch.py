"""The time a bundle records: SOURCE_DATE_EPOCH, else the lock's own time, never the clock (no servers)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from bundler import epoch
from bundler import lock as lockfile
from bundler import spec as specmod
from contract.errors import Error, ValidationError
from tests.unit.test_lock import SPEC, sample_lock


def test_source_date_epoch_wins_over_the_lock() -> None:
    env = {"SOURCE_DATE_EPOCH": "1526860800"}
    assert epoch.source_date_epoch(env) == "2018-05-21T00:00:00Z"
    assert epoch.bundle_time("2026-01-02T03:04:05Z", env) == "2018-05-21T00:00:00Z"
    assert epoch.lock_time(env) == "2018-05-21T00:00:00Z"


def test_without_source_date_epoch_the_lock_time_then_a_fixed_one() -> None:
    assert epoch.source_date_epoch({}) is None and epoch.source_date_epoch({"SOURCE_DATE_EPOCH": " "}) is None
    assert epoch.bundle_time("2026-01-02T03:04:05Z", {}) == "2026-01-02T03:04:05Z"
    assert epoch.bundle_time(None, {}) == epoch.UNRECORDED == "1980-01-01T00:00:00Z"  # a lock from before
    when = datetime(2030, 7, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert epoch.lock_time({}, now=when) == "2030-07-01T12:00:00Z"  # only a new lock reads the clock


@pytest.mark.parametrize("value", ["yesterday", "-5", "1.5", "1e9"])
def test_malformed_source_date_epoch_is_a_clear_error(value: str) -> None:
    with pytest.raises(Error) as e:
        epoch.source_date_epoch({"SOURCE_DATE_EPOCH": value})
    assert "SOURCE_DATE_EPOCH" in e.value.message and "unset it" in e.value.hint
    assert e.value.context == "choosing the time the bundle records"


def test_lock_records_its_time_and_round_trips(tmp_path: Path) -> None:
    lk = sample_lock(specmod.load(SPEC)).model_copy(update={"created": "2026-01-02T03:04:05Z"})
    path = lockfile.write(lk, tmp_path / "bundle-lock.yaml")
    assert "\ncreated: '2026-01-02T03:04:05Z'\n" in path.read_text()
    assert lockfile.load(path).created == "2026-01-02T03:04:05Z"
    path.write_text(path.read_text().replace("2026-01-02T03:04:05Z", "last tuesday"))
    with pytest.raises(ValidationError) as e:
        lockfile.load(path)
    assert "created" in e.value.render()


def test_a_lock_without_a_time_still_loads(tmp_path: Path) -> None:
    lk = sample_lock(specmod.load(SPEC))
    path = lockfile.write(lk, tmp_path / "bundle-lock.yaml")
    path.write_text(path.read_text().replace("created: null\n", ""))
    assert lockfile.load(path).created is None


def test_relocking_without_a_change_keeps_the_recorded_time(tmp_path: Path) -> None:
    spec = specmod.load(SPEC)
    old = sample_lock(spec).model_copy(update={"created": "2026-01-02T03:04:05Z"})
    path = lockfile.write(old, tmp_path / "bundle-lock.yaml")
    same = sample_lock(spec).model_copy(update={"created": "2030-01-01T00:00:00Z"})
    assert lockfile.keep_time(same, path).created == "2026-01-02T03:04:05Z"
    moved = same.model_copy(update={"binaries": same.binaries[1:]})
    assert lockfile.keep_time(moved, path).created == "2030-01-01T00:00:00Z"
    assert lockfile.keep_time(same, tmp_path / "none.yaml").created == "2030-01-01T00:00:00Z"
    path.write_text("not: [a lock")
    assert lockfile.keep_time(same, path) is same
