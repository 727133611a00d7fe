"""One paid request from its Idempotency-Key claim to its exit: `Admission` owns all of it.

    Admissions.admit(request, fingerprint, inspect=...)
        Idempotency-Key claim ──▶ rate-limit lease ──▶ ledger hold ──▶ inspect()
          └ a stored response: replayed, after the key is checked like the hold checks it
          └ refused at any step (400/409, 429, 401/402/403): what was taken is given back
            through the exit below; a refusal before the hold is logged `unbilled`, one by
            `inspect` (an edit's uploads, looked at only once paid for) is refunded
    async with admission:   ◀── the ONE way out, for plain, streamed and failed requests alike
        the work (`app.images.service`, in a task it owns): provider ─▶ images ─▶ body
        rendered for the cost ─▶ admission.settle(cost, body) (delivered if the ledger took
        that cost; else re-rendered for what it took ─▶ admission.deliver(body))
    leaving the block, however (return, exception, cancellation), runs the exit:
        hold never settled  ─▶ settled at zero (refunded in full), with the failure's code
        settled + delivered ─▶ the body stored under the Idempotency-Key (replays)
        otherwise           ─▶ the key given up, so the client may retry it
        always              ─▶ the rate-limit lease released

`PaidRequest` is the one typed record a request carries through all of this: who asked
(`CallContext`), the catalog snapshot it started with, the model, the validated request and
its price (the hold).

Money rules this enforces (issue "the paid request's lifecycle"):
- Settlement happens once, from inside the work, and reports what the ledger actually took:
  a request that outlived its hold and was swept took nothing, and says so (`settle` returns
  0 and logs the late settle), so a response never claims a charge that did not happen.
- The exit never raises: a failure to store the response is logged and the key given up, and
  the response is still delivered (it was paid for); a failure before the settle refunds.
- A claim is fenced (`app.ledger.idempotency.Claim.owner`), so this exit can only store or
  release its own record, never one a later request took over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal

from app.catalog.live import CatalogSnapshot
from app.catalog.parameters import CompiledModel, ValidatedGeneration
from app.errors import GatewayError, ServiceUnavailable
from app.images.results import Body
from app.images.routing import RouteTrace
from app.keys.auth import AuthenticatedKey
from app.ledger.idempotency import Claim, IdempotencyStore, StoredResponse, request_hash
from app.ledger.records import SettleOutcome
from app.ledger.service import Ledger
from app.ratelimit.base import UNLIMITED, Lease, RateLimiter

logger = logging.getLogger(__name__)

Endpoint = Literal["generations", "edits"]
JSON: Final = "application/json"
EVENT_STREAM: Final = "text/event-stream"
#: the request log's status and code of a request cancelled before its end (server shutdown)
CANCELLED: Final = (499, "REQUEST_CANCELLED")
HoldState = Literal["none", "uncertain", "held", "settled"]


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who asked, and how: what the HTTP layer knows before the body is read."""

    key: AuthenticatedKey
    request_id: str
    client_request_id: str | None
    idempotency_key: str | None
    path: str
    endpoint: Endpoint = "generations"


@dataclass(frozen=True, slots=True)
class PaidRequest:
    """A validated, priced request: the one record carried from admission to the exit."""

    ctx: CallContext
    #: the catalog and adapters in force when the request started, used until it ends
    snapshot: CatalogSnapshot
    model: CompiledModel
    validated: ValidatedGeneration
    #: the quote, held from the balance before the provider is called (micro-dollars)
    price: int
    #: `time.perf_counter()` when the request started
    started: float

    @property
    def stream(self) -> bool:
        return self.validated.stream


@dataclass(frozen=True, slots=True)
class Outcome:
    """A complete response (also a stored Idempotency-Key replay)."""

    status_code: int
    body: Body
    media_type: str = JSON


class Admissions:
    """Admits requests: built once at start-up with exactly the stores admission needs."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        idempotency: IdempotencyStore,
        rate_limiter: RateLimiter,
        idempotency_ttl_s: int,
    ) -> None:
        self.ledger = ledger
        self.idempotency = idempotency
        self.rate_limiter = rate_limiter
        self.idempotency_ttl_s = idempotency_ttl_s
        #: exits running shielded from a cancelled caller, referenced until they are done
        self._exits: set[asyncio.Task[None]] = set()

    async def admit(
        self,
        request: PaidRequest,
        fingerprint: bytes,
        *,
        inspect: Callable[[PaidRequest], PaidRequest] | None = None,
    ) -> Admission | Outcome:
        """Claim, lease and hold for `request`; or the stored response to replay.

        `fingerprint`: the bytes the Idempotency-Key's request hash covers (the raw body, or
        an edit's fields and image digests). `inspect`: work that only a paying caller may
        cause, and that may still refuse the request (raise), run once the hold is taken;
        it returns the request to carry on with (an edit's, with its images decoded).
        A refusal is raised after everything taken so far was given back through the
        admission's exit.
        """
        admission = Admission(self, request)
        try:
            replay = await admission._acquire(fingerprint)
            if replay is None and inspect is not None:
                admission.request = inspect(request)
        except BaseException as exc:
            held = admission._hold == "held"  # then its request log row records the refusal
            await admission.close(exc)
            if isinstance(exc, GatewayError) and not held:
                await log_unbilled(
                    self.ledger,
                    request.ctx,
                    model_id=request.model.id,
                    user=request.validated.user,
                    error=exc,
                    started=request.started,
                )
            raise
        return replay if replay is not None else admission

    async def shielded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` to its end even if the caller is cancelled (the task is kept)."""
        task = asyncio.ensure_future(work)
        self._exits.add(task)
        task.add_done_callback(self._exits.discard)
        await asyncio.shield(task)

    async def wait_idle(self) -> None:
        """Wait for exits still running (at shutdown)."""
        if self._exits:
            await asyncio.gather(*self._exits, return_exceptions=True)


class Admission:
    """What one admitted request holds (claim, lease, hold) and its one way out.

    Use it as `async with admission:` around the work; inside, `settle` once and `deliver`
    the response body. Leaving the block, normally or by any exception (cancellation
    included), runs the exit exactly once.
    """

    def __init__(self, admissions: Admissions, request: PaidRequest) -> None:
        self._admissions = admissions
        self.request = request
        self._claim: Claim | None = None
        self._lease: Lease = UNLIMITED
        self._hold: HoldState = "none"
        #: the provider attempts, filled in by the router, kept in the request log
        self.trace = RouteTrace()
        #: what the ledger took at the settle (micro-dollars)
        self.charged_micros = 0
        self._body: Body | None = None
        #: the settle under way, with the cost it settles and the body rendered for that cost
        self._settling: tuple[asyncio.Future[SettleOutcome], int, Body] | None = None
        self._exited = False

    # acquiring -----------------------------------------------------------------------------
    async def _acquire(self, fingerprint: bytes) -> Outcome | None:
        deps, request = self._admissions, self.request
        ctx, key = request.ctx, request.ctx.key
        if ctx.idempotency_key is not None:
            claimed = await deps.idempotency.begin(
                scope=f"{ctx.endpoint}:{key.account_id}",
                key=ctx.idempotency_key,
                request_hash=request_hash("POST", ctx.path, fingerprint),
                ttl_s=deps.idempotency_ttl_s,
                request_id=ctx.request_id,
            )
            if isinstance(claimed, StoredResponse):
                # a replay hands out what was paid for: only to a key the hold would accept
                await deps.ledger.check_key(
                    account_id=key.account_id, key_id=key.key_id, key_hash=key.key_hash
                )
                # the fingerprint covers `stream`, so a stored stream replays to a stream
                media_type = EVENT_STREAM if request.stream else JSON
                return Outcome(claimed.status_code, claimed.body, media_type)
            self._claim = claimed
        self._lease = await deps.rate_limiter.acquire(
            key.key_id, rpm=key.rpm, max_concurrency=key.max_concurrency
        )
        self._hold = "uncertain"  # until the statement answers: it may commit and still raise
        try:
            await deps.ledger.hold(
                request_id=ctx.request_id,
                account_id=key.account_id,
                key_id=key.key_id,
                model=request.model.id,
                amount_micros=request.price,
                endpoint=ctx.endpoint,
                user=request.validated.user,
                client_request_id=ctx.client_request_id,
                key_hash=key.key_hash,
            )
        except GatewayError as refusal:
            if not isinstance(refusal, ServiceUnavailable):
                self._hold = "none"  # refused (401/402/403/409): nothing was written
            raise
        self._hold = "held"
        return None

    # inside the work -----------------------------------------------------------------------
    async def settle(self, *, cost_micros: int, images: int, body: Body) -> int:
        """Settle the hold to the actual cost; return what the ledger actually took.

        `body`: the response rendered for `cost_micros`; it is delivered (stored under the
        Idempotency-Key by the exit) when the ledger took exactly that. A request that
        outlived its hold was refunded by the sweeper: it took nothing, its response must say
        so (0: the caller renders and delivers again), and the late settle is logged.
        The settle runs to its end even if the caller is cancelled meanwhile (a stream cut
        off by a shutdown): the exit then waits for it, so what was charged is delivered.
        """
        request = self.request
        self._settling = (
            asyncio.ensure_future(
                self._admissions.ledger.settle(
                    request_id=request.ctx.request_id,
                    cost_micros=cost_micros,
                    images=images,
                    status_code=200,
                    latency_ms=elapsed_ms(request.started),
                    route=self._route(),
                )
            ),
            cost_micros,
            body,
        )
        return self._settled(await asyncio.shield(self._settling[0]))

    def _settled(self, outcome: SettleOutcome) -> int:
        assert self._settling is not None
        _, cost_micros, body = self._settling
        self._hold = "settled"
        self.charged_micros = outcome.cost_micros if outcome.settled else 0
        if self.charged_micros == cost_micros:
            self._body = body
        if not outcome.settled:
            logger.error(
                "request %s settled late: its hold was already %s, so its %d micro-dollars "
                "were not charged",
                self.request.ctx.request_id,
                outcome.state,
                cost_micros,
            )
        return self.charged_micros

    def _route(self) -> str | None:
        return str(self.trace) if self.trace.attempts else None

    def deliver(self, body: Body) -> None:
        """The response re-rendered for what the ledger took, when that was not the cost
        `settle` was given: the exit stores it under the Idempotency-Key."""
        self._body = body

    # the one exit --------------------------------------------------------------------------
    async def __aenter__(self) -> Admission:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(exc)

    async def close(self, error: BaseException | None = None) -> None:
        """The exit, run once however the request ends (`error`: why it failed, if it did);
        shielded, so a cancelled caller cannot cut it short."""
        await self._admissions.shielded(self._exit(error))

    async def _exit(self, error: BaseException | None) -> None:
        """Refund an unsettled hold, store or give up the key, release the lease. Never raises."""
        if self._exited:
            return
        self._exited = True
        request = self.request
        request_id = request.ctx.request_id
        if self._settling is not None and self._hold != "settled":
            try:  # a settle its caller stopped waiting for: its outcome decides
                self._settled(await self._settling[0])
            except Exception:
                logger.exception("request %s: its settle failed", request_id)
        if self._hold in ("held", "uncertain"):
            status_code, error_code = _failure(error)
            try:
                await self._admissions.ledger.settle(
                    request_id=request_id,
                    cost_micros=0,
                    images=0,
                    status_code=status_code,
                    error_code=error_code,
                    latency_ms=elapsed_ms(request.started),
                    route=self._route(),
                )
            except Exception:
                logger.exception("request %s: refund failed; the sweeper will refund", request_id)
        delivered = self._body if self._hold == "settled" else None
        if self._claim is not None:
            await self._finish_claim(self._claim, delivered)
        try:
            await self._lease.release()
        except Exception:
            logger.exception("request %s: releasing its rate-limit lease failed", request_id)

    async def _finish_claim(self, claim: Claim, delivered: Body | None) -> None:
        store = self._admissions.idempotency
        if delivered is not None:
            try:
                await store.complete(
                    claim,
                    status_code=200,
                    body=delivered,
                    ttl_s=self._admissions.idempotency_ttl_s,
                )
                return
            except Exception:
                # the response is still delivered (it was paid for); the key must not stay
                # `in_progress` for the lease, so it is given up and a retry runs again
                logger.exception(
                    "request %s: storing its response under its Idempotency-Key failed",
                    self.request.ctx.request_id,
                )
        try:
            await store.abandon(claim)
        except Exception:
            logger.exception(
                "request %s: releasing its Idempotency-Key failed; it frees after the lease",
                self.request.ctx.request_id,
            )


def _failure(error: BaseException | None) -> tuple[int, str]:
    """The request log's status and code for a request that ends without its settle."""
    if isinstance(error, GatewayError):
        return error.status, error.code
    if isinstance(error, asyncio.CancelledError):
        return CANCELLED
    return 500, "INTERNAL_ERROR"


def elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


async def log_unbilled(
    ledger: Ledger,
    ctx: CallContext,
    *,
    model_id: str | None,
    user: str | None,
    error: GatewayError,
    started: float,
) -> None:
    """Log a request refused before (or at) admission; never turns a clean 4xx into a 500."""
    try:
        await ledger.log_unbilled(
            request_id=ctx.request_id,
            account_id=ctx.key.account_id,
            key_id=ctx.key.key_id,
            model=model_id,
            status_code=error.status,
            error_code=error.code,
            latency_ms=elapsed_ms(started),
            endpoint=ctx.endpoint,
            user=user,
            client_request_id=ctx.client_request_id,
        )
    except Exception:
        logger.warning("could not log refused request %s", ctx.request_id, exc_info=True)
