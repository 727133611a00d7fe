"""An alias through the official SDK: listed in /v1/models, usable for generation (billed as
its target), and resolved per account."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Env
from tests.support import factories

ALIASES = """
aliases:
  preview: local-preview
  tenant-img: {model: local-preview, accounts: {acct_tenant_b: gpt-image-1}}
"""


@pytest.mark.gateway(models=ALIASES)
def test_an_alias_is_listed_and_generates_as_its_target(env: Env) -> None:
    client = env.client()
    listed = {model.id for model in client.models.list()}
    assert {"preview", "tenant-img", "local-preview"} <= listed
    assert client.models.retrieve("preview").id == "preview"
    result = client.images.generate(model="preview", prompt="an aliased fox")
    assert result.data and result.data[0].b64_json
    assert result.model_extra["model"] == "local-preview"  # type: ignore[index]
    assert result.usage.model_extra["cost"]["total_cost"] == 0.001  # type: ignore[union-attr]


@pytest.mark.gateway(models=ALIASES)
def test_one_alias_points_tenants_at_different_models(env: Env) -> None:
    async def seed(engine):  # type: ignore[no-untyped-def]
        from app.ledger import Ledger

        await Ledger(engine).create_account(
            name="b", balance_micros=1_000_000, account_id="acct_tenant_b"
        )
        return await factories.make_key(engine, "acct_tenant_b")

    _, secret_b = env.run(seed)
    assert env.client().models.retrieve("tenant-img").owned_by == "image-gateway"
    assert env.client(secret_b).models.retrieve("tenant-img").owned_by == "openai"


@pytest.mark.gateway(models=ALIASES)
def test_generation_resolves_an_alias_for_the_callers_account(env: Env) -> None:
    """The same alias generates with each tenant's own target (not only in /v1/models)."""

    async def seed(engine):  # type: ignore[no-untyped-def]
        from app.ledger import Ledger

        await Ledger(engine).create_account(
            name="b", balance_micros=1_000_000, account_id="acct_tenant_b"
        )
        return await factories.make_key(engine, "acct_tenant_b")

    _, secret_b = env.run(seed)
    mine = env.client().images.generate(model="tenant-img", prompt="a fox")
    assert mine.model_extra["model"] == "local-preview"  # type: ignore[index]
    assert not env.upstream.requests
    theirs = env.client(secret_b).images.generate(
        model="tenant-img", prompt="a fox", quality="low", size="1024x1024"
    )
    assert theirs.model_extra["model"] == "gpt-image-1"  # type: ignore[index]
    assert [r.path for r in env.upstream.requests] == ["/v1/images/generations"]
    assert theirs.usage.model_extra["cost"]["total_cost"] == 0.011  # type: ignore[union-attr]
