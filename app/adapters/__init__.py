"""Provider adapters: `base` (the typed interface), `registry` (name -> factory), one module
per provider (`openai`, `local_preview`) and the shared `upstream_http` / `concurrency` helpers.
"""

# `app.catalog` imports `app.adapters.base` (for ImageRequest) while `base` imports
# `app.catalog.schema`; loading the catalog package first keeps either import order working.
import app.catalog  # noqa: F401
