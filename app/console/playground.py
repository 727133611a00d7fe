"""The playground: try a catalog model from the browser, billed to a chosen account.

    page ─▶ pick an account, one of its keys, a model ─▶ a form generated from the model's
            parameter schema (`app.console.forms`) ─▶ the browser builds the exact JSON body
            `POST /v1/images/generations` (or `/edits`) takes, and shows it as Python, Node
            and curl snippets
         ─▶ POST /console/playground/{generations|edits}?key_id=... (CSRF header, that body)
         ─▶ gateway.images.generate / edit (the start-up `ImageService`), as the key
         ─▶ JSON, or server-sent events

How the call is made (the decision, see docs/decisions.md): the console calls the same
`ImageService` the public routes call (`Gateway.images`, built once at start-up), in-process,
authenticated as a key the operator picks from the account's keys
(`KeyAuthenticator.authenticate_hash`: the key's own checks, revoked,
expired, account suspended, without the console ever holding its secret). So a playground
request IS a request of that key: the same validation, model allowlist, rate limits, budgets,
ledger hold and settlement, request-log row and response bytes; nothing is minted, nothing is
free. The only difference is the door it came in by (the operator's session and CSRF token
instead of `Authorization: Bearer`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.admin.reports import Reports
from app.api.deps import read_body, request_ids
from app.api.images import MAX_JSON_BODY_BYTES, respond
from app.api.json_edit import read_edit_json
from app.console.forms import model_form
from app.console.web import CsrfChecked, GatewayDep, SignedIn, render
from app.errors import InvalidRequest
from app.gateway import Gateway
from app.images.service import CallContext, Endpoint
from app.keys.repository import KeyRecord
from app.ledger.records import AccountRecord

router = APIRouter()
#: accounts offered in the picker (the account page links here with its own id preselected)
MAX_ACCOUNTS = 200
PUBLIC_PATHS: dict[Endpoint, str] = {
    "generations": "/v1/images/generations",
    "edits": "/v1/images/edits",
}


def usable(key: KeyRecord, now: datetime) -> bool:
    return not key.revoked and (key.expires_at is None or key.expires_at > now)


async def _accounts(gateway: Gateway, chosen: str) -> list[AccountRecord]:
    accounts, _ = await Reports(gateway.engine).list_accounts(
        limit=MAX_ACCOUNTS, cursor=None, status="active"
    )
    if chosen and all(account.id != chosen for account in accounts):
        found, _ = await Reports(gateway.engine).list_accounts(limit=1, cursor=None, search=chosen)
        accounts = found + accounts
    return accounts


async def _keys(gateway: Gateway, account_id: str) -> list[KeyRecord]:
    if not account_id:
        return []
    keys, _ = await gateway.keys.list_keys(account_id=account_id, limit=200)
    now = datetime.now(UTC)
    return [key for key in keys if usable(key, now)]


@router.get("/playground")
async def playground(
    request: Request,
    session: SignedIn,
    gateway: GatewayDep,
    account_id: str = "",
    key_id: str = "",
    model: str = "",
) -> Response:
    catalog = gateway.catalog  # read once per request: a reload swaps it whole
    accounts = await _accounts(gateway, account_id)
    account_id = account_id or (accounts[0].id if accounts else "")
    chosen = catalog.models.get(model) or next(iter(catalog.models.values()), None)
    return render(
        request,
        "playground.html",
        session,
        accounts=accounts,
        account_id=account_id,
        keys=await _keys(gateway, account_id),
        key_id=key_id,
        models=list(catalog.models),
        form=None if chosen is None else model_form(chosen),
    )


@router.get("/playground/keys")
async def key_options(
    request: Request, session: SignedIn, gateway: GatewayDep, account_id: str = ""
) -> Response:
    """The key picker for another account (swapped in by htmx)."""
    keys = await _keys(gateway, account_id)
    return render(
        request, "_playground_keys.html", session, keys=keys, key_id="", account_id=account_id
    )


@router.get("/playground/fields")
async def model_fields(
    request: Request, session: SignedIn, gateway: GatewayDep, model: str = ""
) -> Response:
    """The parameter form of another model (swapped in by htmx)."""
    chosen = gateway.catalog.models.get(model)
    if chosen is None:
        return render(
            request,
            "refused.html",
            session,
            status_code=404,
            message=f"The model {model!r} is not in the catalog (it may have been reloaded).",
        )
    return render(request, "_playground_fields.html", session, form=model_form(chosen))


@router.post("/playground/{endpoint}")
async def run(
    request: Request, _: CsrfChecked, gateway: GatewayDep, endpoint: Endpoint, key_id: str = ""
) -> Response:
    """Run the body as the key `key_id`: exactly what `POST /v1/images/{endpoint}` would do."""
    if not key_id:
        raise InvalidRequest("Choose a key to charge.", code="MISSING_PARAMETER", param="key_id")
    record = await gateway.keys.get_key(key_id)
    key = await gateway.authenticator.authenticate_hash(record.key_hash)
    request_id, client_request_id = request_ids(request)
    ctx = CallContext(
        key=key,
        request_id=request_id,
        client_request_id=client_request_id,
        idempotency_key=request.headers.get("idempotency-key") or None,
        path=PUBLIC_PATHS[endpoint],
        endpoint=endpoint,
    )
    service = gateway.images  # the one built at start-up: its tasks are drained at shutdown
    limit = gateway.settings.max_request_bytes
    if endpoint == "generations":
        raw = bytes(await read_body(request, min(MAX_JSON_BODY_BYTES, limit)))
        return respond(await service.generate(ctx, raw))
    # as /v1/images/edits reads a JSON edit (reference images decoded once paid for)
    upload = await read_edit_json(
        request, max_request_bytes=limit, max_image_bytes=gateway.settings.max_image_bytes
    )
    return respond(await service.edit(ctx, upload))
