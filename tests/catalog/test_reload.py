"""`CatalogReloader`: a good file is swapped in whole; a bad one is refused and nothing changes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from app.adapters.base import AdapterContext
from app.catalog.live import LiveCatalog
from app.catalog.reload import CatalogReloader, CatalogReloadRefused, build_snapshot

ONE_MODEL = """
providers:
  local: {adapter: local-preview}
models:
  first:
    routes: [{provider: local}]
    pricing: {per_image: 0.001}
"""

TWO_MODELS = (
    ONE_MODEL
    + """
  second:
    routes: [{provider: local}]
    pricing: {per_image: 0.002}
"""
)


@contextmanager
def reloader_on(
    path: Path, text: str = ONE_MODEL
) -> Iterator[tuple[asyncio.Runner, CatalogReloader]]:
    """A reloader serving `text` from `path`, and the event loop to drive it from sync code."""
    path.write_text(text)
    with asyncio.Runner() as runner:
        http = runner.run(_client())
        context = AdapterContext(http=http, max_download_bytes=1024)
        snapshot, _ = build_snapshot(path, {}, context)
        yield runner, CatalogReloader(LiveCatalog(snapshot), path=path, context=context, env={})
        runner.run(http.aclose())


async def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient()


def test_a_good_file_is_swapped_in_and_the_change_reported(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    with reloader_on(path) as (runner, reloader):
        before = reloader.live.current
        path.write_text(TWO_MODELS)
        report = runner.run(reloader.reload())
        assert report.models == ["first", "second"]
        assert report.added == ["second"] and report.removed == []
        assert reloader.live.current is not before
        assert set(reloader.live.current.catalog.models) == {"first", "second"}
        assert set(reloader.live.current.adapters) == {"local"}
        # and back: the removal is reported too
        path.write_text(ONE_MODEL)
        report = runner.run(reloader.reload())
        assert report.removed == ["second"] and report.added == []
        assert "removed second" in report.summary()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("models: [unclosed", "models.yaml"),  # YAML syntax
        (
            ONE_MODEL.replace("per_image: 0.001", "per_image: -1"),
            "models.first.pricing",
        ),
        (  # an unknown adapter, on a provider no visible model uses: refused as at start-up
            ONE_MODEL + "  \nproviders_extra: 1\n",
            "providers_extra",
        ),
        (
            ONE_MODEL.replace(
                "providers:\n", "providers:\n  ghost: {adapter: no-such-adapter, api_key: x}\n"
            ),
            "providers.ghost: unknown adapter 'no-such-adapter'",
        ),
    ],
    ids=["yaml", "price", "unknown-field", "unknown-adapter"],
)
def test_a_bad_file_is_refused_and_the_old_catalog_kept(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "models.yaml"
    with reloader_on(path) as (runner, reloader):
        before = reloader.live.current
        path.write_text(text)
        with pytest.raises(CatalogReloadRefused) as refused:
            runner.run(reloader.reload())
        assert reason in str(refused.value), str(refused.value)
        assert reloader.live.current is before  # nothing swapped


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    with reloader_on(path) as (runner, reloader):
        before = reloader.live.current
        path.unlink()
        with pytest.raises(CatalogReloadRefused, match=r"models\.yaml"):
            runner.run(reloader.reload())
        assert reloader.live.current is before
