"""The multiprocess metrics directory's life cycle (`app.observability.multiproc`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.observability.multiproc import ENV, metrics_directory


@pytest.fixture(autouse=True)
def keep_environment() -> Iterator[None]:
    saved = os.environ.pop(ENV, None)
    yield
    assert ENV not in os.environ, "metrics_directory left the variable set"
    if saved is not None:
        os.environ[ENV] = saved


def test_one_worker_without_a_directory_keeps_metrics_in_process() -> None:
    with metrics_directory(workers=1, configured=None) as directory:
        assert directory is None
        assert ENV not in os.environ


def test_several_workers_get_a_private_directory_removed_at_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    with metrics_directory(workers=3, configured=None) as directory:
        assert directory is not None and directory.is_dir()
        assert directory.parent == tmp_path
        assert os.environ[ENV] == str(directory)
        (directory / "counter_123.db").write_bytes(b"x")
    assert not directory.exists()
    assert ENV not in os.environ


def test_a_configured_directory_is_created_and_wiped_of_an_old_run(tmp_path: Path) -> None:
    configured = tmp_path / "metrics"
    configured.mkdir()
    (configured / "counter_99.db").write_bytes(b"old counts")
    (configured / "README").write_text("not ours")
    with metrics_directory(workers=1, configured=configured) as directory:
        assert directory == configured
        assert os.environ[ENV] == str(configured)
        assert not (configured / "counter_99.db").exists()
        (configured / "counter_100.db").write_bytes(b"this run's counts")
    assert (configured / "counter_100.db").exists()  # the operator's directory is kept
    assert (configured / "README").exists()  # only prometheus-client's files are removed
    fresh = tmp_path / "created"
    with metrics_directory(workers=2, configured=fresh):
        assert fresh.is_dir()
