"""Process-wide observability set-up for a served gateway (`serve`, `app.main:serve_app`).

Logging is configured twice: when the process starts (settings known: admin token, database
and Redis passwords are scrubbed) and again once the catalog is loaded (provider keys and
credential headers join the scrubbed secrets). Tests and embedders that call `create_app`
directly keep their own logging.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from app.catalog.schema import ProviderConfig
from app.observability.logs import configure_logging
from app.settings import Settings

_CREDENTIAL_HEADER_HINTS = ("auth", "key", "token", "secret", "signature")


def _password(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return make_url(url).password
    except (ArgumentError, ValueError):
        return None


def secrets_of(settings: Settings, providers: Iterable[ProviderConfig] = ()) -> list[str]:
    """Every secret this process knows, to be scrubbed from its log lines."""
    found = [
        settings.admin_token,
        settings.console_secret,
        settings.metrics_token,
        _password(settings.database_url),
        _password(settings.redis_url),
    ]
    for provider in providers:
        found.append(provider.api_key)
        found += [
            value
            for name, value in provider.headers.items()
            if any(hint in name.lower() for hint in _CREDENTIAL_HEADER_HINTS)
        ]
    return [secret for secret in found if secret]


def configure_process_logging(settings: Settings, providers: Iterable[ProviderConfig] = ()) -> None:
    configure_logging(
        level=settings.log_level,
        log_format=settings.log_format,
        access_log=settings.access_log,
        secrets=secrets_of(settings, providers),
    )
