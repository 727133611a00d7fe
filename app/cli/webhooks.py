"""`image-gateway webhooks ...`: endpoints and their deliveries (the admin API's webhooks).

    webhooks create URL --event TYPE [--event TYPE ...] [--account ID] [--description TEXT]
    webhooks list | show ID | delete ID
    webhooks enable ID | disable ID | rotate-secret ID
    webhooks test ID            sends a `webhook.test` now (from this process) and shows it
    webhooks deliveries [--endpoint ID] [--status pending|succeeded|failed]

The secret is printed by `create` and `rotate-secret` only. Deliveries are sent by the
running servers; `test` is the one send the CLI makes itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer

from app.admin.webhooks import DeliveryOut, EndpointDeleted, EndpointOut, EndpointWithSecret
from app.cli.common import (
    Cursor,
    Json,
    Limit,
    print_json,
    print_one,
    print_page,
    print_table,
    run,
    when,
)
from app.cli.common import webhooks_cli as cli
from app.webhooks.repository import DeliveryRecord, EndpointRecord


def _endpoints(records: Sequence[EndpointRecord]) -> None:
    print_table(
        ["ID", "URL", "EVENTS", "ACCOUNT", "ENABLED"],
        [[e.id, e.url, ",".join(e.event_types), e.account_id, "yes" if e.enabled else "no"]
         for e in records],
    )  # fmt: skip


def _deliveries(records: Sequence[DeliveryRecord]) -> None:
    print_table(
        ["ID", "ENDPOINT", "EVENT", "STATUS", "ATTEMPTS", "LAST", "NEXT", "LAST ERROR"],
        [[d.id, d.endpoint_id, d.event_type, d.state, d.attempts, when(d.last_attempt_at),
          when(d.next_attempt_at) if d.state == "pending" else None, d.last_error]
         for d in records],
    )  # fmt: skip


def _with_secret(record: EndpointRecord, as_json: bool) -> None:
    if as_json:
        print_json(EndpointWithSecret.with_secret(record))
        return
    _endpoints([record])
    typer.echo(f"secret (shown once): {record.secret}")


@cli.command("create")
def webhooks_create(
    url: str,
    event: Annotated[list[str], typer.Option("--event", help="An event type (repeat).")],
    account: Annotated[str | None, typer.Option(help="Only this account's events.")] = None,
    description: Annotated[str | None, typer.Option(help="A note for operators.")] = None,
    as_json: Json = False,
) -> None:
    """Register an endpoint; prints its signing secret once."""
    record = run(
        lambda s: s.webhooks.create_endpoint(
            url=url, event_types=event, account_id=account, description=description
        )
    )
    _with_secret(record, as_json)


@cli.command("list")
def webhooks_list(limit: Limit = 50, cursor: Cursor = None, as_json: Json = False) -> None:
    """List endpoints."""
    records, next_cursor = run(lambda s: s.webhooks.list_endpoints(limit=limit, cursor=cursor))
    print_page(records, next_cursor, as_json=as_json, out=EndpointOut.of, table=_endpoints)


@cli.command("show")
def webhooks_show(endpoint_id: str, as_json: Json = False) -> None:
    """Show one endpoint (never its secret)."""
    record = run(lambda s: s.webhooks.get_endpoint(endpoint_id))
    print_one(record, as_json=as_json, out=EndpointOut.of, table=_endpoints)


def _set_enabled(endpoint_id: str, enabled: bool, as_json: bool) -> None:
    record = run(lambda s: s.webhooks.update_endpoint(endpoint_id, enabled=enabled))
    print_one(record, as_json=as_json, out=EndpointOut.of, table=_endpoints)


@cli.command("enable")
def webhooks_enable(endpoint_id: str, as_json: Json = False) -> None:
    """Deliver new events to the endpoint again."""
    _set_enabled(endpoint_id, True, as_json)


@cli.command("disable")
def webhooks_disable(endpoint_id: str, as_json: Json = False) -> None:
    """Stop delivering new events to the endpoint (pending ones are still attempted)."""
    _set_enabled(endpoint_id, False, as_json)


@cli.command("rotate-secret")
def webhooks_rotate_secret(endpoint_id: str, as_json: Json = False) -> None:
    """A new signing secret, printed once; the old one stops at once."""
    _with_secret(
        run(lambda s: s.webhooks.update_endpoint(endpoint_id, rotate_secret=True)), as_json
    )


@cli.command("delete")
def webhooks_delete(endpoint_id: str, as_json: Json = False) -> None:
    """Delete an endpoint and its pending deliveries."""
    run(lambda s: s.webhooks.delete_endpoint(endpoint_id))
    if as_json:
        print_json(EndpointDeleted(id=endpoint_id))
    else:
        typer.echo(f"deleted {endpoint_id}")


@cli.command("test")
def webhooks_test(endpoint_id: str, as_json: Json = False) -> None:
    """Send a `webhook.test` event to the endpoint now; shows the delivery."""
    record = run(lambda s: s.webhooks.test_send(endpoint_id))
    print_one(record, as_json=as_json, out=DeliveryOut.of, table=_deliveries)


@cli.command("deliveries")
def webhooks_deliveries(
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint's.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, succeeded or failed.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    as_json: Json = False,
) -> None:
    """Deliveries, newest first, with their status, attempts and last error."""
    records, next_cursor = run(
        lambda s: s.webhooks.list_deliveries(
            endpoint_id=endpoint, state=status, limit=limit, cursor=cursor
        )
    )
    print_page(records, next_cursor, as_json=as_json, out=DeliveryOut.of, table=_deliveries)
