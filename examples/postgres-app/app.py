"""An app behind Outrigger that applies each event exactly once, in PostgreSQL.

Outrigger delivers every event at least once; it dedups by idempotency key, but one window no
consumer can close on its own stays open: the app applied an event and the sidecar died before
it recorded the completion. The sidecar then delivers the same event again, with the same
`outrigger-idempotency-key` and a higher `outrigger-fence`. This app closes that window by
storing the key in the same transaction as the event's effect:

- a key already applied answers 200 and applies nothing (the redelivery becomes a no-op);
- a key seen with a higher fence than this request's, and not applied, belongs to a newer
  claim: this request is a stale writer and is refused with 409 and `outrigger-action: retry`,
  so its sidecar claims again and then waits for the newer holder (or acks a duplicate);
- otherwise the effect and the key's record commit together, or not at all.

The effect here is a ledger: each event credits or debits an account, and a balance never goes
below zero (a debit that would overdraw answers 409: the policy's default retries it, since
the credit it waits for may not have arrived yet).

    POST /         an event: {"event_id": "...", "account": "acct-1", "amount": 10}
    GET  /healthz  200 while the process serves HTTP

Configuration, from the environment: DATABASE_URL (a libpq connection string or URL, default
"postgresql:///outrigger_example"), HOST (default 127.0.0.1: only the sidecar beside the app
needs to reach it), PORT (default 8080).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool, PoolTimeout

LOG = logging.getLogger("postgres-app")

KEY_HEADER = "outrigger-idempotency-key"
FENCE_HEADER = "outrigger-fence"
ACTION_HEADER = "outrigger-action"

# Created at startup when missing. `outrigger_keys` is the app's half of the dedup protocol: the
# highest fence seen per key, and when the key's effect was applied.
SCHEMA = """
CREATE TABLE IF NOT EXISTS outrigger_keys (
    idempotency_key text PRIMARY KEY,
    fence bigint NOT NULL,
    applied_at timestamptz
);
CREATE TABLE IF NOT EXISTS accounts (
    account text PRIMARY KEY,
    balance bigint NOT NULL DEFAULT 0 CHECK (balance >= 0)
);
CREATE TABLE IF NOT EXISTS ledger (
    idempotency_key text PRIMARY KEY REFERENCES outrigger_keys,
    event_id text NOT NULL,
    account text NOT NULL,
    amount bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


class Reply(Exception):
    """Ends a request with this status, body and optional Outrigger action."""

    def __init__(self, status: HTTPStatus, result: str, detail: str = "", action: str | None = None):
        super().__init__(detail or result)
        self.status = status
        self.result = result
        self.detail = detail
        self.action = action


def parse_event(body: bytes) -> tuple[str, str, int]:
    """The event's id, account and amount; a malformed event can never be applied."""
    try:
        event = json.loads(body)
        event_id, account, amount = event["event_id"], event["account"], event["amount"]
    except (ValueError, KeyError, TypeError) as e:
        raise Reply(HTTPStatus.BAD_REQUEST, "invalid-event", f"not an event: {e}", "dead-letter")
    if not isinstance(account, str) or not isinstance(amount, int) or isinstance(amount, bool):
        raise Reply(HTTPStatus.BAD_REQUEST, "invalid-event", "account must be text, amount an integer", "dead-letter")
    return str(event_id), account, amount


def apply_event(pool: ConnectionPool, key: str, fence: int, body: bytes) -> Reply:
    """Applies one event under its idempotency key and fence, in one transaction."""
    event_id, account, amount = parse_event(body)
    with pool.connection() as conn, conn.transaction():
        # Make the key's row exist, then lock it: concurrent deliveries of one key queue here.
        conn.execute(
            "INSERT INTO outrigger_keys (idempotency_key, fence) VALUES (%s, %s)"
            " ON CONFLICT (idempotency_key) DO NOTHING",
            (key, fence),
        )
        seen, applied_at = conn.execute(
            "SELECT fence, applied_at FROM outrigger_keys WHERE idempotency_key = %s FOR UPDATE",
            (key,),
        ).fetchone()
        if applied_at is not None:
            # The crash window: applied before, the sidecar did not record it. Nothing to do.
            conn.execute(
                "UPDATE outrigger_keys SET fence = greatest(fence, %s) WHERE idempotency_key = %s",
                (fence, key),
            )
            return Reply(HTTPStatus.OK, "duplicate", f"applied at {applied_at.isoformat()}")
        if fence < seen:
            raise Reply(
                HTTPStatus.CONFLICT,
                "stale-fence",
                f"fence {fence} is older than {seen}: a newer claim of this key is in progress",
                "retry",
            )
        conn.execute("UPDATE outrigger_keys SET fence = %s WHERE idempotency_key = %s", (fence, key))
        try:
            # A savepoint: a refused effect rolls back alone, the fence seen stays recorded.
            with conn.transaction():
                conn.execute(
                    "INSERT INTO accounts (account) VALUES (%s) ON CONFLICT (account) DO NOTHING",
                    (account,),
                )
                conn.execute(
                    "UPDATE accounts SET balance = balance + %s WHERE account = %s",
                    (amount, account),
                )
                conn.execute(
                    "INSERT INTO ledger (idempotency_key, event_id, account, amount) VALUES (%s, %s, %s, %s)",
                    (key, event_id, account, amount),
                )
        except errors.CheckViolation:
            # No action header: the policy decides (409 retries by default, then dead-letters).
            return Reply(HTTPStatus.CONFLICT, "insufficient-funds", f"{account} cannot go below zero")
        conn.execute("UPDATE outrigger_keys SET applied_at = now() WHERE idempotency_key = %s", (key,))
    return Reply(HTTPStatus.OK, "applied")


class Handler(BaseHTTPRequestHandler):
    """One event per POST, as Outrigger delivers them."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the sidecar's client expects
    server: "App"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/healthz":
            self.answer(Reply(HTTPStatus.OK, "ok"))
        else:
            self.answer(Reply(HTTPStatus.NOT_FOUND, "not-found"))

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        key = self.headers.get(KEY_HEADER)
        fence_text = self.headers.get(FENCE_HEADER)
        try:
            if not key or fence_text is None or not fence_text.isdigit():
                # Without them the event cannot be applied safely: park it for a person.
                raise Reply(
                    HTTPStatus.BAD_REQUEST,
                    "no-idempotency-key",
                    f"needs {KEY_HEADER} and a numeric {FENCE_HEADER} (is dedup off in the policy?)",
                    "dead-letter",
                )
            reply = apply_event(self.server.pool, key, int(fence_text), body)
        except Reply as r:
            reply = r
        except (PoolTimeout, psycopg.OperationalError) as e:
            # The database is down: throttle (503) spends no attempt of the message.
            LOG.warning("database unavailable: %s", e)
            reply = Reply(HTTPStatus.SERVICE_UNAVAILABLE, "database-unavailable", str(e))
        except Exception as e:  # noqa: BLE001 (anything else is worth a retry)
            LOG.exception("failed to apply an event")
            reply = Reply(HTTPStatus.INTERNAL_SERVER_ERROR, "error", str(e))
        LOG.info("key=%s fence=%s result=%s", key, fence_text, reply.result)
        self.answer(reply)

    def answer(self, reply: Reply) -> None:
        payload = json.dumps({"result": reply.result, "detail": reply.detail}).encode() + b"\n"
        self.send_response(reply.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        if reply.action:
            self.send_header(ACTION_HEADER, reply.action)
        if reply.status == HTTPStatus.SERVICE_UNAVAILABLE:
            self.send_header("retry-after", "1")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        LOG.debug(format, *args)


class App(ThreadingHTTPServer):
    """The HTTP server with its connection pool."""

    # In-flight requests finish on shutdown: the sidecar records their answers.
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], pool: ConnectionPool):
        super().__init__(address, Handler)
        self.pool = pool


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(message)s")
    conninfo = os.environ.get("DATABASE_URL", "postgresql:///outrigger_example")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA)
    pool = ConnectionPool(conninfo, min_size=1, max_size=8, timeout=2, open=True)
    server = App((os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8080"))), pool)

    def stop(signum: int, _frame: Any) -> None:
        # Stop accepting, let in-flight requests finish (serve_forever returns), then exit.
        LOG.info("signal %s: stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    LOG.info("listening on %s:%s", *server.server_address[:2])
    try:
        server.serve_forever()
    finally:
        server.server_close()
        pool.close()


if __name__ == "__main__":
    main()
