"""The console over HTTP (no browser): who gets in, what is refused, and that every page and
action goes through the admin services (the books are checked by the ledger tests' helper)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import openai
import pytest

from app.catalog.live import CatalogSnapshot
from app.catalog.loader import load_catalog
from app.console.session import COOKIE_NAME
from app.ledger import Ledger
from app.main import create_app
from app.settings import Settings
from tests.console.conftest import CATALOG, ConsoleEnv, csrf_of, sign_in, tampered
from tests.support import factories
from tests.support.books import assert_books_balance
from tests.support.live import ADMIN_TOKEN


def test_pages_need_a_session_and_say_why(console_env: ConsoleEnv) -> None:
    with console_env.client() as client:
        answer = client.get("/console/accounts?q=x")
        assert answer.status_code == 303
        assert answer.headers["location"] == (
            "/console/login?reason=signin&next=/console/accounts%3Fq%3Dx"
        )
        login = client.get(answer.headers["location"])
        assert "Sign in to continue." in login.text
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie


def test_sign_in_exchanges_the_token_for_a_cookie_that_does_not_hold_it(
    console_env: ConsoleEnv,
) -> None:
    with console_env.client() as client:
        csrf = sign_in(client)
        cookie = client.cookies[COOKIE_NAME]
        assert ADMIN_TOKEN not in cookie
        page = client.get("/console/")
        assert ADMIN_TOKEN not in page.text and csrf in page.text
        assert page.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_wrong_tokens_are_refused_under_the_admin_apis_failure_budget(
    console_env: ConsoleEnv,
) -> None:
    burst = console_env.live.settings.admin_failure_burst
    with console_env.client() as client:
        csrf = csrf_of(client.get("/console/login").text)
        for _ in range(burst):
            answer = client.post("/console/login", data={"token": "nope", "csrf_token": csrf})
            assert answer.status_code == 401
            assert "That is not the admin token" in answer.text
        throttled = client.post("/console/login", data={"token": ADMIN_TOKEN, "csrf_token": csrf})
        assert throttled.status_code == 429  # even the right token, once the budget is spent
        assert client.get("/console/").status_code == 303  # still not signed in
        # one budget per address, shared with Authorization: Bearer on the admin API
        admin = client.get("/admin/v1/accounts", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert admin.status_code == 429


def test_sign_in_refuses_a_missing_csrf_token(console_env: ConsoleEnv) -> None:
    with console_env.client() as client:
        client.get("/console/login")
        answer = client.post("/console/login", data={"token": ADMIN_TOKEN})
        assert answer.status_code == 403
        assert client.get("/console/").status_code == 303


def test_state_changes_need_the_csrf_token_and_the_same_origin(console_env: ConsoleEnv) -> None:
    with console_env.client() as client:
        csrf = sign_in(client)
        missing = client.post("/console/accounts", data={"name": "no-token"})
        assert missing.status_code == 403
        assert "security token" in missing.text
        stale = client.post("/console/accounts", data={"name": "x", "csrf_token": "f" * 43})
        assert stale.status_code == 403
        foreign = client.post(
            "/console/accounts",
            data={"name": "x", "csrf_token": csrf},
            headers={"origin": "https://evil.example"},
        )
        assert foreign.status_code == 403 and "Cross-origin" in foreign.text
        playground = client.post(
            "/console/playground/generations?key_id=key_x",
            json={"model": "local-preview", "prompt": "x"},
        )
        assert playground.status_code == 403
        listed = client.get("/console/accounts?q=no-token")
        assert "No accounts match" in listed.text  # nothing was created


def test_an_expired_session_is_refused_by_the_injected_clock(console_env: ConsoleEnv) -> None:
    ttl = console_env.live.settings.console_session_ttl_s
    with console_env.client() as client:
        csrf = sign_in(client)
        console_env.clock.advance(ttl - 5)
        assert client.get("/console/accounts").status_code == 200
        console_env.clock.advance(10)
        page = client.get("/console/accounts")
        assert page.status_code == 303
        assert page.headers["location"].startswith("/console/login?reason=expired")
        client.cookies.set(COOKIE_NAME, "x", path="/console")  # what the browser still holds
        posted = client.post("/console/accounts", data={"name": "late", "csrf_token": csrf})
        assert posted.status_code == 401
        assert "expired" in posted.text


def test_a_forged_cookie_is_no_session(console_env: ConsoleEnv) -> None:
    with console_env.client() as client:
        sign_in(client)
        value = client.cookies[COOKIE_NAME]
        client.cookies.clear()
        client.cookies.set(COOKIE_NAME, tampered(value))
        assert client.get("/console/").status_code == 303


def test_sign_out_clears_the_session(console_env: ConsoleEnv) -> None:
    with console_env.client() as client:
        csrf = sign_in(client)
        answer = client.post("/console/logout", data={"csrf_token": csrf})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/login?reason=signed_out"
        assert COOKIE_NAME not in client.cookies
        assert client.get("/console/").status_code == 303


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example", "/consolex"])
def test_sign_in_never_redirects_off_the_console(console_env: ConsoleEnv, target: str) -> None:
    with console_env.client() as client:
        form = client.get("/console/login")
        answer = client.post(
            "/console/login",
            data={"token": ADMIN_TOKEN, "csrf_token": csrf_of(form.text), "next": target},
        )
        assert answer.headers["location"] == "/console/"


@pytest.mark.anyio
async def test_the_console_is_off_without_an_admin_token(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/off.db", admin_token=None))
    transport = httpx.ASGITransport(app=app)  # no lifespan: only the routing is asked
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        assert (await client.get("/console/login")).status_code == 404
        assert (await client.get("/console/static/console.css")).status_code == 404


def test_every_page_renders(console_env: ConsoleEnv) -> None:
    async def seed(engine):  # type: ignore[no-untyped-def]
        account_id = await factories.make_account(engine, 5_000_000, name="seeded")
        key_id, _ = await factories.make_key(engine, account_id)
        return account_id, key_id

    account_id, key_id = console_env.run(seed)
    with console_env.client() as client:
        sign_in(client)
        for path in [
            "/console/",
            "/console/?window=14d",
            "/console/accounts",
            f"/console/accounts/{account_id}",
            "/console/keys",
            f"/console/keys?account_id={account_id}",
            f"/console/keys/{key_id}/revoke",
            "/console/requests",
            "/console/requests?state=settled&code=402&since=2020-01-01T00:00",
            "/console/models",
            "/console/playground",
            f"/console/playground?account_id={account_id}&model=local-preview",
            "/console/playground/fields?model=local-preview",
            f"/console/playground/keys?account_id={account_id}",
        ]:
            page = client.get(path)
            assert page.status_code == 200, (path, page.text[:500])
        assert client.get("/console/accounts/acct_nope").status_code == 404
        assert client.get("/console/requests/req_nope").status_code == 404
        assert client.get("/console/keys/key_nope/revoke").status_code == 404


def test_models_page_shows_every_model_and_why_one_is_hidden(console_env: ConsoleEnv) -> None:
    with console_env.client() as client:
        sign_in(client)
        page = client.get("/console/models").text
    assert 'data-model="local-preview"' in page and 'data-model="far-away"' in page
    assert "TEST_CONSOLE_UNSET_KEY" in page  # the missing credential is named
    assert "up to 2 reference images" in page
    assert "$0.001 per image" in page
    assert "<code>tiled</code>: boolean (default false)" in page
    assert "<code>width</code>: integer 64..1024, multiple of 8 (default 256)" in page
    assert "one of plain, vivid (default plain)" in page


def test_a_credit_form_submitted_twice_credits_once(console_env: ConsoleEnv) -> None:
    account_id = console_env.run(lambda engine: factories.make_account(engine, 0, name="twice"))
    with console_env.client() as client:
        sign_in(client)
        page = client.get(f"/console/accounts/{account_id}").text
        key = re.search(r'name="idempotency_key" value="([^"]+)"', page)
        assert key
        form = {
            "csrf_token": csrf_of(page),
            "amount": "2.50",
            "note": "invoice 7",
            "idempotency_key": key.group(1),
        }
        first = client.post(f"/console/accounts/{account_id}/credits", data=form)
        assert first.status_code == 303
        shown = client.get(first.headers["location"]).text
        assert "Credited $2.50; the balance is now $2.50." in shown
        second = client.post(f"/console/accounts/{account_id}/credits", data=form)
        assert second.status_code == 303
        assert "Already applied" in client.get(second.headers["location"]).text
        changed = client.post(
            f"/console/accounts/{account_id}/credits", data={**form, "amount": "3"}
        )
        assert changed.status_code == 400  # the same key with another body: refused
        bad = client.post(
            f"/console/accounts/{account_id}/credits",
            data={**form, "amount": "1.0000001", "idempotency_key": "other"},
        )
        assert bad.status_code == 400 and "amount" in bad.text
        below = client.post(
            f"/console/accounts/{account_id}/credits",
            data={**form, "amount": "-9", "idempotency_key": "other-2"},
        )
        assert below.status_code == 400 and "below zero" in below.text

    async def balance(engine):  # type: ignore[no-untyped-def]
        await assert_books_balance(engine, account_id)
        return (await Ledger(engine).get_account(account_id)).balance_micros

    assert console_env.run(balance) == 2_500_000


def test_a_new_keys_secret_is_shown_once_and_never_again(console_env: ConsoleEnv) -> None:
    account_id = console_env.run(lambda engine: factories.make_account(engine, 0, name="k"))
    with console_env.client() as client:
        csrf = sign_in(client)
        created = client.post(
            f"/console/accounts/{account_id}/keys",
            data={
                "csrf_token": csrf,
                "name": "ci",
                "models": ["local-preview"],
                "rpm": "60",
                "max_concurrency": "2",
                "expires_at": "2099-01-01T00:00",
                "budget_day": "5",
            },
        )
        assert created.status_code == 200 and created.headers["cache-control"] == "no-store"
        secret = re.search(r'value="(sk-[^"]+)"', created.text)
        assert secret
        assert secret.group(1) not in client.get(f"/console/accounts/{account_id}").text
        assert secret.group(1) not in client.get("/console/keys").text
        invalid = client.post(
            f"/console/accounts/{account_id}/keys",
            data={"csrf_token": csrf, "name": "bad", "rpm": "many"},
        )
        assert invalid.status_code == 400 and "rpm" in invalid.text
    models = httpx.get(
        f"{console_env.url}/v1/models", headers={"Authorization": f"Bearer {secret.group(1)}"}
    )
    assert models.status_code == 200  # the shown secret is the key's


def test_a_request_page_shows_its_idempotency_key_and_replays(console_env: ConsoleEnv) -> None:
    async def seed(engine):  # type: ignore[no-untyped-def]
        account_id = await factories.make_account(engine, 1_000_000, name="replayed")
        return await factories.make_key(engine, account_id)

    _, secret = console_env.run(seed)
    sdk = openai.OpenAI(base_url=f"{console_env.url}/v1", api_key=secret, max_retries=0)
    plain = sdk.images.with_raw_response.generate(model="local-preview", prompt="once")
    retried = [
        sdk.images.with_raw_response.generate(
            model="local-preview", prompt="twice", extra_headers={"Idempotency-Key": "k-1"}
        )
        for _ in range(3)
    ]
    first_id = retried[0].headers["x-request-id"]
    with console_env.client() as client:
        sign_in(client)
        page = client.get(f"/console/requests/{first_id}").text
        assert "<code>k-1</code>" in page
        assert re.search(r'data-testid="replays">2 \(last ', page)
        other = client.get(f"/console/requests/{plain.headers['x-request-id']}").text
        assert "Sent without an Idempotency-Key" in other
        # the replays are no requests of their own
        log = client.get("/console/requests?state=settled").text
        assert log.count('<a href="/console/requests/') == 2


def test_rotate_and_delete_keys_and_suspend_an_account(console_env: ConsoleEnv) -> None:
    async def seed(engine):  # type: ignore[no-untyped-def]
        account_id = await factories.make_account(engine, 1_000_000, name="ops")
        key_id, secret = await factories.make_key(engine, account_id, name="rotating")
        return account_id, key_id, secret

    account_id, key_id, old_secret = console_env.run(seed)

    def models_status(secret: str) -> tuple[int, str | None]:
        answer = httpx.get(
            f"{console_env.url}/v1/models", headers={"Authorization": f"Bearer {secret}"}
        )
        body = answer.json()
        return answer.status_code, body.get("error", {}).get("code") if "error" in body else None

    with console_env.client() as client:
        csrf = sign_in(client)
        confirm = client.get(f"/console/keys/{key_id}/rotate")
        assert "A new secret is issued" in confirm.text
        rotated = client.post(f"/console/keys/{key_id}/rotate", data={"csrf_token": csrf})
        assert rotated.status_code == 200 and "Key rotating rotated" in rotated.text
        found = re.search(r'value="(sk-[^"]+)"', rotated.text)
        assert found
        new_secret = found.group(1)
        assert models_status(old_secret)[0] == 401
        assert models_status(new_secret) == (200, None)

        suspended = client.post(
            f"/console/accounts/{account_id}/status",
            data={"csrf_token": csrf, "status": "suspended"},
        )
        assert suspended.status_code == 303
        assert "Account suspended." in client.get(suspended.headers["location"]).text
        assert models_status(new_secret) == (403, "ACCOUNT_SUSPENDED")
        client.post(
            f"/console/accounts/{account_id}/status", data={"csrf_token": csrf, "status": "active"}
        )
        assert models_status(new_secret) == (200, None)

        deleted = client.post(f"/console/keys/{key_id}/delete", data={"csrf_token": csrf})
        assert deleted.status_code == 303
        assert "Key rotating deleted." in client.get(deleted.headers["location"]).text
        assert models_status(new_secret)[0] == 401
        assert client.get(f"/console/keys/{key_id}/delete").status_code == 404


def test_accounts_search_and_pages(console_env: ConsoleEnv) -> None:
    async def seed(engine):  # type: ignore[no-untyped-def]
        ids = [await factories.make_account(engine, name=f"team-{i:02d}") for i in range(23)]
        ids.append(await factories.make_account(engine, name="Zebra Films"))
        for _ in range(30):  # a long ledger for the last one
            await Ledger(engine).credit(account_id=ids[-1], amount_micros=1_000, note="tick")
        return ids

    ids = console_env.run(seed)
    with console_env.client() as client:
        sign_in(client)
        first = client.get("/console/accounts").text
        assert first.count('<a href="/console/accounts/acct_') == 20
        cursor = re.search(r'cursor=([^"&]+)" rel="next"', first)
        assert cursor
        second = client.get(f"/console/accounts?q=&cursor={cursor.group(1)}").text
        assert second.count('<a href="/console/accounts/acct_') == 4 and 'rel="next"' not in second
        assert "Zebra Films" in second and "Zebra Films" not in first
        found = client.get("/console/accounts?q=zebra").text
        assert found.count('<a href="/console/accounts/acct_') == 1 and "Zebra Films" in found
        assert client.get(f"/console/accounts?q={ids[0]}").text.count("team-00") == 1

        ledger = client.get(f"/console/accounts/{ids[-1]}").text
        assert ledger.count("<td>topup</td>") == 25
        older = re.search(
            r'href="(/console/accounts/[^"]+\?cursor=[^"#]+)#ledger" rel="next"', ledger
        )
        assert older
        rest = client.get(older.group(1)).text
        assert rest.count("<td>topup</td>") == 5


def test_request_log_filters(console_env: ConsoleEnv) -> None:
    async def seed(engine):  # type: ignore[no-untyped-def]
        rich = await factories.make_account(engine, 1_000_000, name="rich")
        poor = await factories.make_account(engine, 0, name="poor")
        return (
            rich,
            await factories.make_key(engine, rich),
            poor,
            await factories.make_key(engine, poor),
        )

    rich, (rich_key, rich_secret), poor, (_, poor_secret) = console_env.run(seed)
    for secret in (rich_secret, poor_secret):
        sdk = openai.OpenAI(base_url=f"{console_env.url}/v1", api_key=secret, max_retries=0)
        try:
            sdk.images.generate(model="local-preview", prompt="filtered")
        except openai.APIStatusError as exc:
            assert exc.status_code == 402  # the poor account
    with console_env.client() as client:
        sign_in(client)

        def rows(query: str) -> int:
            page = client.get(f"/console/requests?{query}")
            assert page.status_code == 200
            return page.text.count('<a href="/console/requests/')

        assert rows("") == 2
        assert rows(f"account_id={rich}") == 1
        assert rows(f"key_id={rich_key}") == 1
        assert rows("model=local-preview") == 2
        assert rows("state=unbilled") == 1 and rows("state=settled") == 1
        assert rows("code=402") == 1 and rows("code=INSUFFICIENT_BALANCE") == 1
        assert rows("code=200") == 1
        assert rows("since=2000-01-01T00:00&until=2099-01-01T00:00") == 2
        assert rows("since=2099-01-01T00:00") == 0
        assert rows(f"account_id={poor}&state=settled") == 0


def test_the_playground_runs_only_as_a_usable_key(console_env: ConsoleEnv) -> None:
    async def seed(engine):  # type: ignore[no-untyped-def]
        account_id = await factories.make_account(engine, 1_000_000, name="pg")
        live_key, _ = await factories.make_key(engine, account_id, name="live-one")
        revoked, _ = await factories.make_key(engine, account_id, name="old-one", revoked=True)
        bare = await factories.make_account(engine, 1_000_000, name="keyless")
        return account_id, live_key, revoked, bare

    account_id, live_key, revoked, bare = console_env.run(seed)
    with console_env.client() as client:
        csrf = sign_in(client)
        picker = client.get(f"/console/playground/keys?account_id={account_id}").text
        assert "live-one" in picker and "old-one" not in picker
        assert "has no active key" in client.get(f"/console/playground/keys?account_id={bare}").text
        headers = {"x-csrf-token": csrf}
        body = {"model": "local-preview", "prompt": "as the key"}
        refused = client.post(
            f"/console/playground/generations?key_id={revoked}", json=body, headers=headers
        )
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "KEY_REVOKED"
        ran = client.post(
            f"/console/playground/generations?key_id={live_key}", json=body, headers=headers
        )
        assert ran.status_code == 200, ran.text
        assert ran.json()["usage"]["cost"]["total_cost"] == 0.001
        logged = client.get(f"/console/requests/{ran.headers['x-request-id']}").text
        assert live_key in logged and "$0.001" in logged
        streamed = client.post(
            f"/console/playground/generations?key_id={live_key}",
            json={**body, "stream": True, "partial_images": 1},
            headers=headers,
        )
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert streamed.text.count("event: image_generation.partial_image") == 1
        assert streamed.text.count("event: image_generation.completed") == 1
        # an edit is read as /v1/images/edits reads a JSON one: this URI decodes (once paid
        # for) to zeros, not an image, so it is refused then and refunded in full
        edit = client.post(
            f"/console/playground/edits?key_id={live_key}",
            json={**body, "images": [{"image_url": "data:image/png;base64," + "A" * 8000}]},
            headers=headers,
        )
        error = edit.json()["error"]
        assert (edit.status_code, error["code"], error["param"]) == (400, "INVALID_IMAGE", "image")

    async def balance(engine):  # type: ignore[no-untyped-def]
        await assert_books_balance(engine, account_id)
        return (await Ledger(engine).get_account(account_id)).balance_micros

    assert console_env.run(balance) == 1_000_000 - 2_000


def test_pages_follow_a_catalog_reload(console_env: ConsoleEnv, tmp_path: Path) -> None:
    gateway = console_env.live.gateway
    path = tmp_path / "reloaded.yaml"
    path.write_text(CATALOG.replace("local-preview:", "fresh-model:", 1))
    catalog = load_catalog(path, {})
    with console_env.client() as client:
        sign_in(client)
        assert 'data-model="fresh-model"' not in client.get("/console/models").text
        gateway.live.swap(CatalogSnapshot(catalog, gateway.adapters))
        assert 'data-model="fresh-model"' in client.get("/console/models").text
        assert "<option selected>fresh-model</option>" in client.get("/console/playground").text


def test_a_proxy_forwarding_the_browsers_host_passes_the_origin_check(
    console_env: ConsoleEnv,
) -> None:
    with console_env.client() as client:
        csrf = sign_in(client)
        answer = client.post(
            "/console/accounts",
            data={"name": "via-proxy", "csrf_token": csrf},
            headers={"origin": "https://gw.example", "x-forwarded-host": "gw.example"},
        )
        assert answer.status_code == 303


def test_a_broken_cursor_is_a_message_on_the_page(console_env: ConsoleEnv) -> None:
    with console_env.client() as client:
        sign_in(client)
        page = client.get("/console/requests?cursor=not-a-cursor")
        assert page.status_code == 200
        assert "Invalid pagination cursor." in page.text
