"""Every asset is the gateway's own: vendored libraries at their pinned version with their
licence, served from /console/static, and no page or script that loads anything from
elsewhere (the console works offline)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import app.console

CONSOLE = Path(app.console.__file__).parent
HTMX = CONSOLE / "static" / "vendor" / "htmx-2.0.11"
#: sha256 of package/dist/htmx.min.js in `npm pack htmx.org@2.0.11`
HTMX_SHA256 = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"


def test_htmx_is_the_pinned_release_with_its_licence() -> None:
    assert hashlib.sha256((HTMX / "htmx.min.js").read_bytes()).hexdigest() == HTMX_SHA256
    assert "Zero-Clause BSD" in (HTMX / "LICENSE").read_text()
    readme = (CONSOLE / "static" / "vendor" / "README.md").read_text()
    assert "2.0.11" in readme and HTMX_SHA256 in readme


def test_pages_and_scripts_load_nothing_from_elsewhere() -> None:
    external = re.compile(r"""(src|href|action)\s*=\s*["'](https?:)?//""", re.IGNORECASE)
    for path in [*CONSOLE.glob("templates/*.html"), CONSOLE / "static" / "console.js"]:
        assert not external.search(path.read_text()), path.name
    assert "@import" not in (CONSOLE / "static" / "console.css").read_text()


def test_pages_have_no_inline_script_or_style_the_policy_would_block() -> None:
    for path in CONSOLE.glob("templates/*.html"):
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path.name
        assert " style=" not in text and "<style" not in text, path.name
        assert not re.search(r"\son[a-z]+=", text), path.name  # no inline event handlers
