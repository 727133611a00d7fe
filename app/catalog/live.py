"""The catalog in force, swappable as a whole while requests run.

A reload (SIGHUP or the admin endpoint) builds a complete new `CatalogSnapshot` (the compiled
catalog and one adapter per provider), checks it, and swaps it in with one assignment. A
request reads `LiveCatalog.current` once, when it starts, and keeps that snapshot until it
ends, so an in-flight request never sees half of an old catalog and half of a new one, and
nothing in flight is dropped by a reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.adapters.base import ImageAdapter
    from app.catalog.loader import Catalog


@dataclass(frozen=True, slots=True)
class CatalogSnapshot:
    catalog: Catalog
    #: one adapter per catalog provider, by provider name
    adapters: Mapping[str, ImageAdapter]


class LiveCatalog:
    """Holds the snapshot in force; `swap` replaces it atomically (one reference assignment)."""

    __slots__ = ("_current",)

    def __init__(self, snapshot: CatalogSnapshot) -> None:
        self._current = snapshot

    @property
    def current(self) -> CatalogSnapshot:
        return self._current

    def swap(self, snapshot: CatalogSnapshot) -> CatalogSnapshot:
        """Put `snapshot` in force and return the one it replaces."""
        previous, self._current = self._current, snapshot
        return previous
