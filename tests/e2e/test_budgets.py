"""Per-key budgets end to end (SPEC 9): set through the admin API, enforced on the SDK's calls
with 402 BUDGET_EXCEEDED before the provider is called, shown to operators
(`GET /admin/v1/keys/{id}`) and to the key itself (`GET /v1/usage`)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.conftest import Env

PRICE = 0.001  # local-preview, one image


def test_a_daily_budget_stops_the_key_and_is_shown_everywhere(env: Env) -> None:
    with env.admin() as admin:
        created = admin.post(
            f"/accounts/{env.account_id}/keys",
            json={"name": "ci", "budgets": [{"period": "day", "amount": "0.003"},
                                            {"period": "total", "amount": 100}]},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        key = created.json()
        assert [(b["period"], b["amount"], b["spent"]) for b in key["budgets"]] == [
            ("day", 0.003, 0.0),
            ("total", 100.0, 0.0),
        ]
        client = env.client(key["key"])
        for _ in range(3):
            client.images.generate(model="local-preview", prompt="a budgeted cat")
        with pytest.raises(openai.APIStatusError) as refused:
            client.images.generate(model="local-preview", prompt="one too many")
        assert refused.value.status_code == 402
        assert refused.value.body["code"] == "BUDGET_EXCEEDED"  # type: ignore[index]
        assert refused.value.body["type"] == "insufficient_quota"  # type: ignore[index]

        shown = admin.get(f"/keys/{key['id']}").json()["budgets"]
        assert [(b["period"], b["spent"], b["remaining"]) for b in shown] == [
            ("day", 0.003, 0.0),
            ("total", 0.003, 99.997),
        ]
        # the refused request was never charged: only three charges on the account
        ledger = admin.get(f"/accounts/{env.account_id}/ledger").json()["data"]
        assert sum(1 for row in ledger if row["kind"] == "charge") == 3

        own = httpx.get(
            f"{env.gateway.url}/v1/usage", headers={"Authorization": f"Bearer {key['key']}"}
        ).json()
        assert own["key_id"] == key["id"] and own["spendable"] == 0.0
        assert [b["remaining"] for b in own["budgets"]] == [0.0, 99.997]
        # another key of the same account sees only itself, and has no budget
        other = httpx.get(
            f"{env.gateway.url}/v1/usage", headers={"Authorization": f"Bearer {env.secret}"}
        ).json()
        assert other["key_id"] == env.key_id and other["budgets"] == []

        # raising the budget lets the key spend again at once
        patched = admin.patch(
            f"/keys/{key['id']}", json={"budgets": [{"period": "day", "amount": "0.004"}]}
        )
        assert patched.status_code == 200, patched.text
        assert [b["remaining"] for b in patched.json()["budgets"]] == [0.001]
        client.images.generate(model="local-preview", prompt="one more")


@pytest.mark.parametrize(
    "budgets",
    [
        [{"period": "week", "amount": 1}],
        [{"period": "day", "amount": 0}],
        [{"period": "day", "amount": "0.0000001"}],
        [{"period": "day", "amount": 1}, {"period": "day", "amount": 2}],
    ],
)
def test_bad_budgets_are_a_400_naming_budgets(env: Env, budgets: list[object]) -> None:
    with env.admin() as admin:
        response = admin.post(
            f"/accounts/{env.account_id}/keys", json={"name": "k", "budgets": budgets}
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith("budgets")


def test_an_account_time_zone_is_validated(env: Env) -> None:
    with env.admin() as admin:
        bad = admin.patch(f"/accounts/{env.account_id}", json={"timezone": "Mars/Olympus"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "timezone"
        good = admin.patch(f"/accounts/{env.account_id}", json={"timezone": "Asia/Tokyo"})
        assert good.json()["timezone"] == "Asia/Tokyo"
