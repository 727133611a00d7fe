"""`CatalogError`: the one exception a bad `config/models.yaml` raises at start-up.

Every problem is reported with the file, then the dotted path of the offending field, then what
is wrong, e.g.

    config/models.yaml: models.nano-banana-pro.parameters.resolution.default: '8K' is not ...

The compile steps (`parameters`, `sizing`, `pricing`) do not know the file name; they raise a
`CatalogError` with only a path, and `load_catalog` re-raises it with the file attached.
"""

from __future__ import annotations

from collections.abc import Sequence

PathPart = str | int


def dotted(path: Sequence[PathPart]) -> str:
    return ".".join(str(part) for part in path)


class CatalogError(Exception):
    """The catalog file cannot be used; `str(err)` is the message for the operator."""

    def __init__(
        self, message: str, *, path: Sequence[PathPart] = (), file: str | None = None
    ) -> None:
        self.problem = message
        self.path = tuple(path)
        self.file = file
        super().__init__(self._render())

    def _render(self) -> str:
        where = [part for part in (self.file, dotted(self.path)) if part]
        return ": ".join([*where, self.problem])

    def in_file(self, file: str) -> CatalogError:
        return CatalogError(self.problem, path=self.path, file=file)
