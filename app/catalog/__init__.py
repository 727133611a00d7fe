"""The model catalog: `config/models.yaml` loaded, validated and compiled once at start-up.

- `schema`: the file's shape (pydantic);
- `loader`: `load_catalog(path, env) -> Catalog` (env substitution, cross-checks, hidden models);
- `parameters`: `CompiledModel` and its request validator (`validate(body) -> ValidatedGeneration`);
- `checks`: the per-type value checks behind it; `sizing`: sizing styles and `size` translation;
- `pricing`: `Price.quote` (the up-front hold) and `Price.settle` (the actual cost), in micros.

docs/catalog.md is the operator's reference for the file format.
"""

from app.catalog.errors import CatalogError
from app.catalog.loader import Catalog, load_catalog
from app.catalog.parameters import CompiledModel, ValidatedGeneration
from app.catalog.pricing import Price

__all__ = [
    "Catalog",
    "CatalogError",
    "CompiledModel",
    "Price",
    "ValidatedGeneration",
    "load_catalog",
]
