"""The webhook admin API: endpoints with a secret shown once, validation as OpenAI-shaped
400s, test-send verified by the receiver, deliveries with status and attempts; and the
account fields that drive events and prices (`low_balance_threshold`, `pricing`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from app.admin.endpoints import router as admin_router
from app.admin.webhooks import router as webhooks_router
from app.api.errors import register_error_handlers
from app.keys.auth import KeyAuthenticator
from app.ledger import Ledger
from app.security.throttle import FailureThrottle
from app.settings import Settings
from app.webhooks.destinations import DestinationPolicy
from app.webhooks.service import WebhookService
from tests.support.factories import make_account
from tests.webhooks.conftest import Hooks

pytestmark = pytest.mark.anyio

TOKEN = "webhook-admin-token-0123456789abcdefghij"


@dataclass
class _Gateway:
    settings: Settings
    webhooks: WebhookService
    ledger: Ledger
    authenticator: KeyAuthenticator
    admin_throttle: FailureThrottle


@pytest.fixture
async def admin(hooks: Hooks) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    register_error_handlers(app)
    app.include_router(admin_router)
    app.include_router(webhooks_router)
    app.state.gateway = _Gateway(
        settings=Settings(GATEWAY_ADMIN_TOKEN=TOKEN),
        webhooks=hooks.service,
        ledger=Ledger(hooks.engine),
        authenticator=KeyAuthenticator(hooks.engine),
        admin_throttle=FailureThrottle(what="admin token", burst=100, refill_s=1),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://gateway",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield client


async def test_endpoint_lifecycle_and_test_send(admin: httpx.AsyncClient, hooks: Hooks) -> None:
    created = await admin.post(
        "/admin/v1/webhooks/endpoints",
        json={"url": hooks.receiver.url, "event_types": ["balance.below_threshold"]},
    )
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["secret"].startswith("whsec_") and endpoint["enabled"] is True
    hooks.receiver.secret = endpoint["secret"]
    path = f"/admin/v1/webhooks/endpoints/{endpoint['id']}"

    listed = (await admin.get("/admin/v1/webhooks/endpoints")).json()
    assert [e["id"] for e in listed["data"]] == [endpoint["id"]]
    assert "secret" not in listed["data"][0] and "secret" not in (await admin.get(path)).json()

    sent = await admin.post(f"{path}/test")
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "succeeded" and sent.json()["attempts"] == 1
    [got] = hooks.receiver.delivered
    assert got.verified and got.payload["type"] == "webhook.test"

    hooks.receiver.failing = True
    failed = (await admin.post(f"{path}/test")).json()
    assert failed["status"] == "pending" and failed["last_error"] == "HTTP 500"
    assert failed["next_attempt_at"] is not None
    deliveries = await admin.get(f"/admin/v1/webhooks/deliveries?endpoint_id={endpoint['id']}")
    assert [d["status"] for d in deliveries.json()["data"]] == ["pending", "succeeded"]

    patched = await admin.patch(path, json={"enabled": False, "event_types": ["key.expiring"]})
    assert patched.json()["enabled"] is False and patched.json()["event_types"] == ["key.expiring"]
    rotated = (await admin.patch(path, json={"rotate_secret": True})).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != endpoint["secret"]

    assert (await admin.delete(path)).json() == {
        "object": "webhook_endpoint",
        "id": endpoint["id"],
        "deleted": True,
    }
    missing = await admin.get(path)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "WEBHOOK_NOT_FOUND"


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"url": "http://example.com/h", "event_types": ["key.expiring"]}, "url", "https://"),
        ({"url": "https://u:p@example.com/h", "event_types": ["key.expiring"]}, "url", "creden"),
        ({"url": "https://127.0.0.1/h", "event_types": ["key.nope"]}, "event_types", "key.nope"),
        ({"url": "https://127.0.0.1/h", "event_types": []}, "event_types", "at least one"),
    ],
)
async def test_bad_endpoints_are_400s_naming_the_field(
    admin: httpx.AsyncClient, body: dict[str, object], param: str, says: str
) -> None:
    answer = await admin.post("/admin/v1/webhooks/endpoints", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and says in error["message"]


async def test_private_addresses_need_the_operator_opt_in(hooks: Hooks) -> None:
    strict = WebhookService(hooks.engine, hooks.dispatcher, DestinationPolicy())
    for url in (
        "https://127.0.0.1/h",
        "https://10.1.2.3/h",
        "https://[::1]/h",
        "https://localhost/h",
    ):
        with pytest.raises(Exception, match="private, loopback") as refused:
            await strict.create_endpoint(url=url, event_types=["key.expiring"])
        assert getattr(refused.value, "param", None) == "url"


async def test_account_threshold_and_pricing_are_validated_and_shown(
    admin: httpx.AsyncClient, hooks: Hooks
) -> None:
    account = await make_account(hooks.engine)
    path = f"/admin/v1/accounts/{account}"
    ok = await admin.patch(
        path,
        json={
            "low_balance_threshold": "2.5",
            "pricing": {"multiplier": "1.25", "models": {"m": {"per_image": 0.1}}},
        },
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["low_balance_threshold"] == 2.5
    assert ok.json()["pricing"] == {"multiplier": "1.25", "models": {"m": {"per_image": 0.1}}}
    for body, says in [
        ({"pricing": {"multiplier": 0}}, "pricing.multiplier: a multiplier must be above 0"),
        ({"pricing": {"models": {"m": {}}}}, "exactly one of multiplier, per_image"),
        ({"pricing": {"factor": 2}}, "pricing.factor"),
        ({"low_balance_threshold": 0}, "must be positive"),
    ]:
        bad = await admin.patch(path, json=body)
        assert bad.status_code == 400, bad.text
        assert says in bad.json()["error"]["message"]
    cleared = await admin.patch(path, json={"pricing": None, "low_balance_threshold": None})
    assert cleared.json()["pricing"] is None and cleared.json()["low_balance_threshold"] is None
