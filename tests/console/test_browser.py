"""Every console flow in headless Chromium, as an operator does it: sign in, create an
account, credit it, create a key, generate with `local-preview` in the playground (plain,
streamed, and as an edit), see the image and the cost charged, revoke the key, read the ledger
and the request log, sign out; a forged CSRF token and an expired session are refused.

Screenshots of every page at desktop and phone width go to build/screenshots/ (git-ignored).
The books of every account are checked at the end, like every other money test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.console.browser import DESKTOP, PHONE, PageProblems, browser, screenshot
from tests.console.conftest import ConsoleEnv
from tests.e2e.conftest import assert_all_books_closed
from tests.support.live import ADMIN_TOKEN

__all__ = ["browser"]  # the session fixture, imported so pytest finds it
pytestmark = [
    pytest.mark.browser,
    # one backend: the pages are the same on both, and the HTTP tests run on both
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


@pytest.fixture
def context(console_env: ConsoleEnv, browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(base_url=console_env.url, viewport=DESKTOP)
    context.set_default_timeout(20_000)  # generous: a loaded CI machine, never a wait
    yield context
    context.close()
    console_env.run(assert_all_books_closed)


def sign_in(page: Page) -> None:
    page.goto("/console/")
    expect(page).to_have_url(re.compile(r"/console/login\?reason=signin"))
    expect(page.get_by_text("Sign in to continue.")).to_be_visible()
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def stored(page: Page) -> str:
    """Everything scripts of the page could keep: web storage (htmx keeps the current path
    there, nothing else)."""
    text: str = page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
    return text


#: visible form controls without an accessible name (a <label>, aria-label, or button text)
UNLABELLED = """() => Array.from(document.querySelectorAll('input, select, textarea, button'))
  .filter((el) => el.type !== 'hidden' && el.offsetParent !== null)
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
    && !(el.tagName === 'BUTTON' && el.textContent.trim()))
  .map((el) => el.outerHTML.slice(0, 120))"""


def both_widths(page: Page, name: str) -> None:
    """Screenshots at desktop and phone width, and every control on the page is labelled."""
    assert page.evaluate(UNLABELLED) == [], name
    screenshot(page, name)
    page.set_viewport_size(PHONE)
    screenshot(page, name)
    page.set_viewport_size(DESKTOP)


def choose_and_swap(page: Page, label: str, value: str, slot: str) -> None:
    """Pick an option whose change makes htmx replace `slot`'s content, and wait for it."""
    page.locator(slot).evaluate(
        "slot => slot.querySelectorAll('*').forEach(e => e.dataset.old = 1)"
    )
    page.get_by_label(label).select_option(value)
    expect(page.locator(f"{slot} label:not([data-old])").first).to_be_attached()


def reference_png(folder: Path) -> Path:
    path = folder / "reference.png"
    Image.new("RGB", (96, 64), (200, 40, 40)).save(path)
    return path


def test_an_operator_runs_the_gateway_from_the_console(
    context: BrowserContext, console_env: ConsoleEnv, tmp_path: Path
) -> None:
    page = context.new_page()
    problems = PageProblems(page)
    page.goto("/console/login")
    both_widths(page, "01-sign-in")
    sign_in(page)
    cookies = {c["name"]: c for c in context.cookies()}
    session = cookies["igw_console"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert ADMIN_TOKEN not in session["value"]
    assert page.evaluate("document.cookie") == ""  # scripts see no cookie at all
    assert ADMIN_TOKEN not in stored(page)

    # create an account
    page.get_by_role("link", name="Accounts").click()
    page.get_by_label("Name").fill("Acme Studio")
    page.get_by_label("Opening balance (USD)").fill("0")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("status")).to_have_text("Account Acme Studio created.")
    account_url = page.url
    account_id = account_url.rsplit("/", 1)[1]

    # credit it
    page.get_by_label("Amount (USD)").fill("5")
    page.get_by_label("Note").fill("invoice 42")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("status")).to_have_text("Credited $5.00; the balance is now $5.00.")
    expect(page.get_by_test_id("balance")).to_have_text("$5.00")

    # create a key: model picker, limits, expiry
    expect(page.locator("details.create-key")).to_have_attribute("open", "")  # no key yet
    page.get_by_label("Name", exact=True).fill("studio-ci")
    page.get_by_label("local-preview").check()
    page.get_by_label("Requests per minute").fill("120")
    page.get_by_label("Concurrent requests").fill("4")
    page.get_by_label("Expires (UTC)").fill("2099-12-31T23:59")
    both_widths(page, "04-account-create-key")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("heading", name="Key studio-ci created")).to_be_visible()
    secret = page.get_by_test_id("secret").input_value()
    assert secret.startswith("sk-")
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_text("Copied.")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    both_widths(page, "05-key-secret-shown-once")
    page.get_by_role("link", name="Back to the account").click()
    expect(page.locator("body")).not_to_contain_text(secret)
    assert secret not in stored(page) and ADMIN_TOKEN not in stored(page)

    # the playground: plain generation
    page.get_by_role("link", name="Playground").first.click()
    expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    choose_and_swap(page, "Charge to account", account_id, "#pg-key-slot")
    expect(page.get_by_label("Key (whose limits and budgets apply)")).to_have_value(
        re.compile("^key_")
    )
    choose_and_swap(page, "Model", "local-preview", "#pg-fields-slot")
    prompt = page.get_by_label("Prompt")
    prompt.fill("a lighthouse at dusk")
    expect(page.locator("#pg-prompt-count")).to_have_text("20 / 200 characters")
    choose_and_swap(page, "Model", "local-preview", "#pg-fields-slot")  # a new form...
    expect(prompt).to_have_value("a lighthouse at dusk")  # ...keeps the prompt
    expect(page.locator("#pg-prompt-count")).to_have_text("20 / 200 characters")
    page.get_by_label("width").fill("320")
    page.get_by_label("mood").select_option("vivid")
    python = page.get_by_test_id("snippet-python")
    expect(python).to_contain_text('model="local-preview"')
    expect(python).to_contain_text('extra_body={"width": 320, "mood": "vivid"}')
    expect(page.get_by_test_id("snippet-node")).to_contain_text('"width": 320')
    expect(page.get_by_test_id("snippet-curl")).to_contain_text('"prompt":"a lighthouse at dusk"')
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#pg-status")).to_have_text("Done: 1 image(s), 320x192.")
    image = page.locator("#pg-output figure.final img")
    expect(image).to_have_count(1)
    expect(page.locator("#pg-output figcaption")).to_have_text("Image 1 of 1: 320x192 px")
    expect(page.get_by_test_id("charged")).to_contain_text("Charged $0.001 to Acme Studio.")
    both_widths(page, "06-playground-result")

    # streamed, with partial images shown as they arrive
    page.get_by_label("Stream the result").check()
    page.get_by_label("Partial images while streaming").fill("2")
    expect(python).to_contain_text("stream=True")
    # every partial image put on screen, as mutation records (the records keep what was shown
    # even when the final image replaced it before the observer ran)
    page.evaluate(
        """() => {
        window.partialsShown = 0;
        new MutationObserver((records) => {
          for (const record of records) {
            const img = record.target;
            if (img.tagName === 'IMG' && record.attributeName === 'src'
                && img.closest('figure')?.classList.contains('partial')) {
              window.partialsShown += 1;
            }
          }
        }).observe(document.querySelector('#pg-output'), {subtree: true, attributes: true,
          attributeFilter: ['src']});
      }"""
    )
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#pg-status")).to_have_text(
        "Done (streamed): 1 image(s) after 2 partial image(s)."
    )
    assert page.evaluate("window.partialsShown") == 2
    expect(page.locator("#pg-output figcaption")).to_have_text("Image 1: 320x192 px")
    expect(page.get_by_test_id("charged")).to_contain_text("Charged $0.001 to Acme Studio.")

    # an edit: reference images turn the request into /v1/images/edits
    page.get_by_label("Stream the result").uncheck()
    page.set_input_files("#pg-images", str(reference_png(tmp_path)))
    expect(page.get_by_test_id("snippet-curl")).to_contain_text("/v1/images/edits")
    expect(python).to_contain_text('image=[open("reference-1.png", "rb")]')
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#pg-status")).to_have_text(re.compile(r"^Done: 1 image"))
    expect(page.get_by_test_id("charged")).to_contain_text("Charged $0.001")

    # a refusal is the API's own message
    prompt.fill("x" * 201)
    expect(page.locator("#pg-prompt-count")).to_have_class(re.compile("over"))
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#pg-status")).to_have_text("The prompt is longer than 200 characters.")
    prompt.fill("three of them")
    page.get_by_label("Images (n)").fill("3")  # max_n is 2: the model's own validation says so
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#pg-status")).to_have_text(re.compile(r"^Refused \(400\): .*\bn\b"))
    page.get_by_label("Images (n)").fill("1")

    # the key from code, retried under one Idempotency-Key: run once, replayed once
    sdk = openai.OpenAI(base_url=f"{console_env.url}/v1", api_key=secret, max_retries=0)
    for _ in range(2):
        retried = sdk.images.generate(
            model="local-preview", prompt="retried", extra_headers={"Idempotency-Key": "retry-1"}
        )
        assert retried.data and retried.data[0].b64_json

    # the request log and one request
    page.get_by_role("link", name="Requests").click()
    page.get_by_label("Account id").fill(account_id)
    page.get_by_label("State").select_option("settled")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.log tbody tr")
    expect(rows).to_have_count(4)  # the replay ran nothing: it is not a request of its own
    both_widths(page, "07-request-log")
    rows.first.get_by_role("link").first.click()
    expect(page.get_by_test_id("cost")).to_have_text("$0.001")
    expect(page.get_by_test_id("latency")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(page.get_by_test_id("error-code")).to_have_text("none")
    expect(page.get_by_role("cell", name="charge")).to_be_visible()
    expect(page.get_by_test_id("replays")).to_have_text(
        re.compile(r"^1 \(last .*\): answered from the stored response, not charged again$")
    )
    both_widths(page, "08-request-detail")

    # the ledger, newest first: four charges under the credit
    page.goto(account_url)
    kinds = page.locator("#ledger ~ .table-wrap tbody tr td:nth-child(2)")
    expect(kinds).to_have_text(["charge", "charge", "charge", "charge", "topup"])
    expect(page.get_by_test_id("balance")).to_have_text("$4.996")
    both_widths(page, "09-account-ledger")

    # revoke the key behind a confirmation; the playground then refuses it
    page.get_by_role("link", name="Revoke").click()
    expect(page.get_by_role("heading", name="Revoke the key studio-ci?")).to_be_visible()
    both_widths(page, "10-key-confirm-revoke")
    page.get_by_role("button", name="Yes, revoke it").click()
    expect(page.get_by_role("status")).to_have_text("Key studio-ci revoked.")
    expect(page.get_by_text("revoked", exact=True)).to_be_visible()
    refused = httpx.get(
        f"{console_env.url}/v1/models", headers={"Authorization": f"Bearer {secret}"}
    )
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "KEY_REVOKED"

    # the other pages, for the record
    for name, link in [
        ("02-overview", "Overview"),
        ("03-accounts", "Accounts"),
        ("11-keys", "Keys"),
        ("12-models", "Models"),
    ]:
        page.get_by_role("link", name=link, exact=True).first.click()
        expect(page.locator("h1")).to_be_visible()
        both_widths(page, name)
    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_test_id("total-requests")).to_have_text("5")  # 4 settled + 1 refused
    expect(page.get_by_test_id("in-flight")).to_have_text("0")
    problems.assert_none()

    # sign out
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    page.goto("/console/accounts")
    expect(page).to_have_url(re.compile(r"/console/login\?reason=signin"))


def test_a_forged_csrf_token_is_refused(context: BrowserContext, console_env: ConsoleEnv) -> None:
    page = context.new_page()
    sign_in(page)
    page.goto("/console/accounts")
    page.get_by_label("Name").fill("Forged")
    page.locator('form[action="/console/accounts"] input[name="csrf_token"]').evaluate(
        "input => { input.value = 'forged-token' }"
    )
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("alert")).to_have_text(
        "The form's security token is missing or stale: reload the page."
    )
    page.goto("/console/accounts?q=Forged")
    expect(page.get_by_text("No accounts match")).to_be_visible()


def test_an_expired_session_is_refused(context: BrowserContext, console_env: ConsoleEnv) -> None:
    page = context.new_page()
    sign_in(page)
    page.goto("/console/accounts")
    console_env.clock.advance(console_env.live.settings.console_session_ttl_s + 1)
    page.get_by_label("Name").fill("Too late")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("alert")).to_contain_text("Your session has expired")
    page.goto("/console/")
    expect(page).to_have_url(re.compile(r"/console/login\?reason="))
    # signing in again by keyboard alone: the token field has the focus, Enter submits
    expect(page.get_by_label("Admin token")).to_be_focused()
    page.keyboard.type(ADMIN_TOKEN)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.goto("/console/accounts?q=Too+late")
    expect(page.get_by_text("No accounts match")).to_be_visible()
