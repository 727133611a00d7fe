"""What one request turned out to be, gathered while it runs, for its access line and metrics.

The observability middleware opens a `RequestFacts` and puts it in a context variable; the
layers below record what only they know through the `note_*` helpers (a no-op outside a
request, e.g. in the sweeper or the CLI). Tasks started by the request (a stream's work, a
shielded settlement) copy the context, so they fill in the same object.

Nothing here may hold a secret or request content: key *ids*, account ids, model and provider
names, codes and numbers only.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class RequestFacts:
    request_id: str
    #: the client's own `x-request-id`, echoed back to it instead of ours (None: not sent)
    client_request_id: str | None
    method: str
    path: str
    #: the metrics label for the path ("generations", "models", "admin", ...)
    endpoint: str
    status: int | None = None
    #: the error code of the answer (or of a stream's error event); None: success
    code: str | None = None
    key_id: str | None = None
    account_id: str | None = None
    model: str | None = None
    #: the provider that answered (the last one tried, if none did)
    provider: str | None = None
    #: time spent waiting on providers (all attempts), subtracted from the gateway-added time
    upstream_s: float = 0.0
    cost_micros: int | None = None
    images: int | None = None
    stream: bool = False
    #: answered from a stored Idempotency-Key response
    replayed: bool = False


_current: ContextVar[RequestFacts | None] = ContextVar("request_facts", default=None)


def current() -> RequestFacts | None:
    return _current.get()


def open_facts(facts: RequestFacts) -> object:
    """Make `facts` the current request's; returns the token for `close_facts`."""
    return _current.set(facts)


def close_facts(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def note_key(*, key_id: str, account_id: str) -> None:
    facts = _current.get()
    if facts is not None:
        facts.key_id = key_id
        facts.account_id = account_id


def note_model(model: str) -> None:
    facts = _current.get()
    if facts is not None:
        facts.model = model


def note_error(code: str) -> None:
    facts = _current.get()
    if facts is not None:
        facts.code = code


def note_replayed() -> None:
    facts = _current.get()
    if facts is not None:
        facts.replayed = True


def note_settled(*, model: str, cost_micros: int, images: int, code: str | None) -> None:
    facts = _current.get()
    if facts is not None:
        facts.model = model
        facts.cost_micros = cost_micros
        facts.images = images
        if code is not None:
            facts.code = code


def note_upstream(provider: str, seconds: float) -> None:
    facts = _current.get()
    if facts is not None:
        facts.provider = provider
        facts.upstream_s += seconds
