"""Account pricing end to end: set through the admin API, applied to the official SDK's calls
(`usage.cost.total_cost`) and to the ledger; the catalog price stays everyone else's default."""

from __future__ import annotations

from tests.e2e.conftest import Env
from tests.support import factories


def cost(result: object) -> float:
    return result.to_dict()["usage"]["cost"]["total_cost"]  # type: ignore[attr-defined,no-any-return]


def test_a_multiplier_and_a_per_model_price_change_what_the_account_pays(env: Env) -> None:
    async def second_account(engine):  # type: ignore[no-untyped-def]
        account = await factories.make_account(engine, balance_micros=10_000_000)
        return (await factories.make_key(engine, account))[1]

    other_secret = env.run(second_account)
    with env.admin() as admin:
        answer = admin.patch(
            f"/accounts/{env.account_id}",
            json={"pricing": {"multiplier": "1.5", "models": {"gpt-image-1": {"per_image": 0.05}}}},
        )
        assert answer.status_code == 200, answer.text
        client = env.client()

        scaled = client.images.generate(model="local-preview", prompt="a cat", n=2)
        assert cost(scaled) == 0.003  # 2 x $0.001 x 1.5
        flat = client.images.generate(
            model="gpt-image-1", prompt="a cat", quality="low", size="1024x1024"
        )
        assert cost(flat) == 0.05  # the catalog says $0.011: the account's price wins
        charges = [
            row["amount"]
            for row in admin.get(f"/accounts/{env.account_id}/ledger").json()["data"]
            if row["kind"] == "charge"
        ]
        assert charges == [-0.05, -0.003]
        assert admin.get(f"/accounts/{env.account_id}").json()["balance"] == 9.947

        # another account pays the catalog's price
        assert (
            cost(env.client(other_secret).images.generate(model="local-preview", prompt="x"))
            == 0.001
        )

        unknown = admin.patch(
            f"/accounts/{env.account_id}", json={"pricing": {"models": {"nope": {"multiplier": 2}}}}
        )
        assert unknown.status_code == 400
        assert unknown.json()["error"]["param"] == "pricing"
        assert "'nope' is not a model id" in unknown.json()["error"]["message"]

        admin.patch(f"/accounts/{env.account_id}", json={"pricing": None})
        assert cost(client.images.generate(model="local-preview", prompt="a cat")) == 0.001
