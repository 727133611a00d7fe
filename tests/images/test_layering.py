"""The images layer is built by the composition root, never the other way round: nothing in
`app/images/` imports `app.gateway` (issue 6: `ImageService` gets exactly what it uses)."""

from __future__ import annotations

import ast
from pathlib import Path

import app.images

IMAGES = Path(app.images.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_module_of_the_images_layer_imports_the_gateway() -> None:
    modules = sorted(IMAGES.glob("*.py"))
    assert len(modules) > 5
    offenders = {
        path.name
        for path in modules
        if any(
            name == "app.gateway" or name.startswith("app.gateway.")
            for name in imported_modules(path)
        )
    }
    assert offenders == set()
