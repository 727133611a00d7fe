"""The Postgres statements of the money path: each is ONE statement, so ONE round trip.

Each runs alone on an AUTOCOMMIT connection: no BEGIN/COMMIT round trips, and the row lock on
`accounts` is held only for the statement's own implicit transaction (execute + commit).

Why they are atomic and race-free under READ COMMITTED:

- A statement with data-modifying CTEs is one implicit transaction: all its rows commit together
  or none do. The ledger row and the request_log row are inserted `FROM debited`, so they exist
  exactly when the balance moved.
- `UPDATE accounts ... WHERE balance_micros >= :amount` takes the row lock; a concurrent
  statement blocks on it and, once it gets the lock, Postgres re-evaluates the WHERE clause
  against the newly committed row version (EvalPlanQual). So the check and the debit are one
  step: 500 concurrent holds on a balance that covers K of them debit exactly K times. The
  CHECK (balance_micros >= 0) is the last line of defence and is never hit.
- Ledger ids come from a sequence called while the account row lock is held, so per account the
  ledger order is the balance order: `balance_after` chains exactly (`tests/support/books.py`).
- `UPDATE request_log ... WHERE state = 'pending'` is the once-only switch of settle and sweep:
  whichever statement flips the row first refunds; the other sees no row and does nothing.
  UNIQUE(request_id, kind) on the ledger backs this up (at most one refund per request).
- Lock order is always request_log row, then key_spend rows, then accounts row; a hold locks
  only the account (its request_log row is new), a budgeted hold first its key_spend rows
  (`app.ledger.budgets`), so these statements do not deadlock with each other. In FINISH the
  accounts UPDATE reads `(SELECT count(*) FROM spend_back)`: that initplan runs before the
  accounts row is updated, which makes the key_spend refund happen first.
- A debit that takes the balance below the account's `low_balance_threshold_micros` writes
  its `balance.below_threshold` webhook event in the same statement (`ALERT`), so the event
  exists exactly when the debit committed.
- A key with budgets must take the budgeted path: the fast HOLD refuses it (`NOT EXISTS
  key_budgets`, an index probe) unless `:budgeted`, so a budget added a moment ago is never
  skipped by a process whose caches think the key has none.

`"user"` is quoted: it is a reserved word in Postgres. Parameters are CAST where Postgres
could not infer their type from the context.
"""

from __future__ import annotations

from sqlalchemy import TextClause, text

LEDGER_COLUMNS = (
    "id, account_id, key_id, request_id, kind, amount_micros, balance_after_micros, model, "
    "note, created_at"
)

#: `balance.below_threshold` into the webhook outbox, in the same statement as the debit
#: (`{moved}`: the CTE that moved the balance; `{before}`: the balance before it, as SQL).
#: Only a debit that crosses the threshold downwards writes a row, so the row lock makes it
#: exactly one event per crossing; the dedupe key (threshold and the id of the account's
#: latest credit) keeps it to one until the next credit re-arms it. The crossing row is rare,
#: and only then is the correlated subquery over the account's credits evaluated.
ALERT = """\
INSERT INTO webhook_events (id, event_type, account_id, data, dedupe_key, fanned_out, created_at)
    SELECT 'msg_' || substr(md5(random()::text || clock_timestamp()::text), 1, 24),
           'balance.below_threshold', d.id,
           json_build_object('account_id', d.id, 'balance_micros', d.balance_micros,
                             'threshold_micros', d.low_balance_threshold_micros)::text,
           'balance.below_threshold:' || d.id || ':' || d.low_balance_threshold_micros || ':'
               || (SELECT coalesce(max(e.id), 0) FROM ledger_entries AS e
                   WHERE e.account_id = d.id AND e.kind IN ('topup', 'adjustment')
                     AND e.amount_micros > 0),
           false, now()
    FROM {moved} AS d
    WHERE d.low_balance_threshold_micros IS NOT NULL
      AND d.balance_micros < d.low_balance_threshold_micros
      AND {before} >= d.low_balance_threshold_micros
    ON CONFLICT (dedupe_key) DO NOTHING"""

HOLD_SQL = f"""\
WITH usable_key AS (
    SELECT 1 FROM api_keys
    WHERE id = :key_id AND account_id = :account_id AND revoked_at IS NULL
      AND (expires_at IS NULL OR expires_at > now())
      AND (CAST(:key_hash AS TEXT) IS NULL OR key_hash = CAST(:key_hash AS TEXT))
      AND (CAST(:budgeted AS BOOLEAN)
           OR NOT EXISTS (SELECT 1 FROM key_budgets WHERE key_id = :key_id))
),
debited AS (
    UPDATE accounts SET balance_micros = balance_micros - CAST(:amount AS BIGINT)
    WHERE id = :account_id AND status = 'active'
      AND balance_micros >= CAST(:amount AS BIGINT)
      AND EXISTS (SELECT 1 FROM usable_key)
    RETURNING id, balance_micros, low_balance_threshold_micros
),
alerted AS (
    {ALERT.format(moved="debited", before="d.balance_micros + CAST(:amount AS BIGINT)")}
),
charged AS (
    INSERT INTO ledger_entries
        (account_id, key_id, request_id, kind, amount_micros, balance_after_micros, model)
    SELECT :account_id, :key_id, :request_id, 'charge', -CAST(:amount AS BIGINT),
           balance_micros, :model
    FROM debited WHERE CAST(:amount AS BIGINT) > 0
),
logged AS (
    INSERT INTO request_log
        (id, client_request_id, account_id, key_id, model, endpoint, state, images,
         held_micros, cost_micros, "user", budget_windows)
    SELECT :request_id, :client_request_id, :account_id, :key_id, :model, :endpoint,
           'pending', 0, CAST(:amount AS BIGINT), 0, :user, CAST(:budget_windows AS TEXT)
    FROM debited
)
SELECT balance_micros FROM debited"""

#: Many holds on ONE account in one statement (group commit, `app.ledger.batching`): the
#: account row is locked, and the WAL flushed, once for the whole batch instead of once per
#: hold. All or nothing on the balance: the batch's usable items are debited together only if
#: the balance covers all of them; otherwise nothing moves and every item is held alone (the
#: exact single-hold path above). Items whose key is not usable right now (or has budgets) are
#: left out and returned as not held, to be refused (or budgeted) one by one. The ledger rows
#: are inserted in the items' order while the row lock is held, so `balance_after` chains
#: exactly: item n's is the balance before the batch less the running sum up to n.
HOLD_BATCH_SQL = f"""\
WITH items AS (
    SELECT * FROM unnest(
        CAST(:request_ids AS TEXT[]), CAST(:key_ids AS TEXT[]), CAST(:key_hashes AS TEXT[]),
        CAST(:amounts AS BIGINT[]), CAST(:models AS TEXT[]), CAST(:endpoints AS TEXT[]),
        CAST(:users AS TEXT[]), CAST(:client_request_ids AS TEXT[])
    ) WITH ORDINALITY AS t(request_id, key_id, key_hash, amount, model, endpoint, "user",
                            client_request_id, n)
),
usable AS (
    SELECT i.*, sum(i.amount) OVER (ORDER BY i.n) AS running
    FROM items AS i JOIN api_keys AS k ON k.id = i.key_id
    WHERE k.account_id = :account_id AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now())
      AND (i.key_hash IS NULL OR k.key_hash = i.key_hash)
      AND NOT EXISTS (SELECT 1 FROM key_budgets AS b WHERE b.key_id = i.key_id)
),
total AS (SELECT coalesce(sum(amount), 0) AS amount, count(*) AS items FROM usable),
debited AS (
    UPDATE accounts SET balance_micros = balance_micros - (SELECT amount FROM total)
    WHERE id = :account_id AND status = 'active'
      AND balance_micros >= (SELECT amount FROM total)
      AND (SELECT items FROM total) > 0
    RETURNING id, balance_micros, low_balance_threshold_micros
),
alerted AS (
    {ALERT.format(moved="debited", before="d.balance_micros + (SELECT amount FROM total)")}
),
charged AS (
    INSERT INTO ledger_entries
        (account_id, key_id, request_id, kind, amount_micros, balance_after_micros, model)
    SELECT :account_id, u.key_id, u.request_id, 'charge', -u.amount,
           d.balance_micros + t.amount - u.running, u.model
    FROM usable AS u CROSS JOIN debited AS d CROSS JOIN total AS t
    WHERE u.amount > 0
    ORDER BY u.n
),
logged AS (
    INSERT INTO request_log
        (id, client_request_id, account_id, key_id, model, endpoint, state, images,
         held_micros, cost_micros, "user", budget_windows)
    SELECT u.request_id, u.client_request_id, :account_id, u.key_id, u.model, u.endpoint,
           'pending', 0, u.amount, 0, u."user", NULL
    FROM usable AS u CROSS JOIN debited AS d
)
SELECT u.request_id, d.balance_micros + t.amount - u.running AS balance_after
FROM usable AS u CROSS JOIN debited AS d CROSS JOIN total AS t"""

#: settle (new_state 'settled') and sweep (new_state 'swept') of one request. The accounts
#: UPDATE only matches when there is something to give back, so the happy path (cost == held)
#: touches request_log alone and never waits on the hot account row.
FINISH_SQL = """\
WITH finished AS (
    UPDATE request_log
    SET state = :new_state,
        cost_micros = LEAST(CAST(:cost AS BIGINT), held_micros),
        images = :images, status_code = :status_code, error_code = :error_code,
        latency_ms = :latency_ms, route = CAST(:route AS TEXT), finished_at = now()
    WHERE id = :request_id AND state = 'pending'
    RETURNING account_id, key_id, model, held_micros, cost_micros, budget_windows
),
spend_back AS (
    UPDATE key_spend AS s
    SET spent_micros = s.spent_micros - (f.held_micros - f.cost_micros)
    FROM finished AS f
    WHERE f.budget_windows IS NOT NULL AND f.held_micros > f.cost_micros
      AND s.key_id = f.key_id AND s."window" = ANY(string_to_array(f.budget_windows, ','))
    RETURNING s."window"
),
refunded AS (
    UPDATE accounts AS a
    SET balance_micros = a.balance_micros + (f.held_micros - f.cost_micros)
    FROM finished AS f
    WHERE a.id = f.account_id AND f.held_micros > f.cost_micros
      AND (SELECT count(*) FROM spend_back) >= 0
    RETURNING a.balance_micros, f.held_micros - f.cost_micros AS refund
),
logged AS (
    INSERT INTO ledger_entries
        (account_id, key_id, request_id, kind, amount_micros, balance_after_micros, model, note)
    SELECT f.account_id, f.key_id, :request_id, 'refund', r.refund, r.balance_micros, f.model,
           :note
    FROM finished AS f CROSS JOIN refunded AS r
)
SELECT f.held_micros, f.cost_micros, f.model, r.refund, r.balance_micros AS balance_after
FROM finished AS f LEFT JOIN refunded AS r ON true"""

#: Many settles that refund nothing (cost >= hold), in one statement: the same once-only
#: switch as FINISH (`state = 'pending'`), and nothing else to write, since a settle that
#: keeps the whole hold moves no money. A request whose hold is above its cost (a refund is
#: due), or that is no longer pending, is not returned: its caller runs FINISH alone, which
#: refunds, or reports the lost race.
SETTLE_BATCH_SQL = """\
UPDATE request_log AS r
SET state = 'settled', cost_micros = r.held_micros, images = i.images,
    status_code = i.status_code, error_code = i.error_code, latency_ms = i.latency_ms,
    route = i.route, finished_at = now()
FROM unnest(
    CAST(:request_ids AS TEXT[]), CAST(:costs AS BIGINT[]), CAST(:images AS INTEGER[]),
    CAST(:status_codes AS INTEGER[]), CAST(:error_codes AS TEXT[]),
    CAST(:latencies AS INTEGER[]), CAST(:routes AS TEXT[])
) AS i(request_id, cost, images, status_code, error_code, latency_ms, route)
WHERE r.id = i.request_id AND r.state = 'pending' AND r.held_micros <= i.cost
RETURNING r.id, r.held_micros, r.model"""

CREDIT_SQL = f"""\
WITH moved AS (
    UPDATE accounts SET balance_micros = balance_micros + CAST(:amount AS BIGINT)
    WHERE id = :account_id AND balance_micros + CAST(:amount AS BIGINT) >= 0
      AND balance_micros <= CAST(:max_balance AS BIGINT) - CAST(:amount AS BIGINT)
    RETURNING id, balance_micros, low_balance_threshold_micros
),
alerted AS (
    {ALERT.format(moved="moved", before="d.balance_micros - CAST(:amount AS BIGINT)")}
)
INSERT INTO ledger_entries
    (account_id, key_id, request_id, kind, amount_micros, balance_after_micros, model, note)
SELECT :account_id, NULL, :request_id, :kind, CAST(:amount AS BIGINT), balance_micros, NULL,
       :note
FROM moved
RETURNING {LEDGER_COLUMNS}"""

STALE_PENDING_SQL = """\
SELECT id FROM request_log
WHERE state = 'pending'
  AND created_at < now() - make_interval(secs => CAST(:older_than_s AS DOUBLE PRECISION))
ORDER BY created_at
LIMIT :limit"""


HOLD: TextClause = text(HOLD_SQL)
HOLD_BATCH: TextClause = text(HOLD_BATCH_SQL)
FINISH: TextClause = text(FINISH_SQL)
SETTLE_BATCH: TextClause = text(SETTLE_BATCH_SQL)
CREDIT: TextClause = text(CREDIT_SQL)
STALE_PENDING: TextClause = text(STALE_PENDING_SQL)
