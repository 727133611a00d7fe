"""One access line per request (`GATEWAY_ACCESS_LOG`), with what an operator needs to find a
request again: its id (the `x-request-id` the client got), key id, account, model, provider,
status, error code, cost and latencies. Never the key's secret."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import openai
import pytest

from app.observability.logs import ACCESS_LOGGER
from tests.e2e.conftest import Env


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        {**vars(r), "message": r.getMessage()} for r in caplog.records if r.name == ACCESS_LOGGER
    ]


def test_one_line_per_request_with_its_facts(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    client = env.client()
    ok = client.images.with_raw_response.generate(
        model="gpt-image-1", prompt="a", quality="low", extra_headers={"x-request-id": "trace-7"}
    )
    with pytest.raises(openai.BadRequestError):
        client.images.generate(model="local-preview", prompt="a", size="13x13")
    models = httpx.get(
        f"{env.gateway.base_url}/models", headers={"Authorization": f"Bearer {env.secret}"}
    )
    assert models.status_code == 200

    lines = access_lines(caplog)
    assert len(lines) == 3
    success, refused, listing = lines
    assert ok.headers["x-request-id"] == success["client_request_id"] == "trace-7"
    assert success["request_id"].startswith("req_")  # ours, as in the request log
    assert (success["status"], success["code"]) == (200, None)
    assert (success["key_id"], success["account_id"]) == (env.key_id, env.account_id)
    assert (success["model"], success["provider"]) == ("gpt-image-1", "mockai")
    assert success["cost_usd"] == ok.parse().to_dict()["usage"]["cost"]["total_cost"]
    assert success["images"] == 1
    assert success["duration_ms"] >= success["upstream_ms"] > 0
    assert success["gateway_ms"] == pytest.approx(
        success["duration_ms"] - success["upstream_ms"], abs=0.2
    )
    assert success["message"].startswith("POST /v1/images/generations 200 ")

    assert (refused["status"], refused["model"]) == (400, "local-preview")
    assert refused["code"] and refused["code"] in refused["message"]
    assert refused["cost_usd"] is None and refused["provider"] is None

    assert (listing["endpoint"], listing["status"], listing["key_id"]) == (
        "models",
        200,
        env.key_id,
    )
    for line in lines:
        assert env.secret not in repr(line)


@pytest.mark.gateway(settings={"access_log": False})
def test_access_log_off(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    env.client().images.generate(model="local-preview", prompt="quiet")
    assert access_lines(caplog) == []
