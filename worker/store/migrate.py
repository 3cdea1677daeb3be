"""Versioned SQL migrations: ``worker/store/migrations/NNNN_name.sql`` applied once each, in order."""

from __future__ import annotations

import re
from importlib import resources

from psycopg2 import sql

from worker.store import db

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x71747261696E  # 'qtrain': serialises concurrent `db init`s


def available() -> list[tuple[int, str, str]]:
    """(version, file name, SQL text) of every bundled migration, in version order."""
    out = []
    for entry in resources.files("worker.store.migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            out.append((int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(out)


def migrate(url: str) -> dict[str, object]:
    """Create the database if missing and apply pending migrations; idempotent.

    Also sets the database's ``search_path`` to ``btc, public`` so that plain
    ``SELECT count(*) FROM ollama_analyses`` works in psql.
    """
    created = db.ensure_database(url)
    applied: list[str] = []
    conn = db.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            cur.execute("CREATE SCHEMA IF NOT EXISTS btc")
            cur.execute(
                "CREATE TABLE IF NOT EXISTS btc.schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur.execute("SELECT version FROM btc.schema_migrations")
            done = {r[0] for r in cur.fetchall()}
            for version, name, text in available():
                if version in done:
                    continue
                cur.execute(text)
                cur.execute(
                    "INSERT INTO btc.schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
                applied.append(name)
            cur.execute(
                sql.SQL("ALTER DATABASE {} SET search_path TO btc, public").format(
                    sql.Identifier(db.database_name(url))
                )
            )
    finally:
        conn.close()
    return {"database_created": created, "applied": applied}


def require_schema(url: str) -> None:
    """PostgreSQL answers and the schema exists, else ``db.SchemaMissing`` (one line: what to run):
    the preflight of ``qtrain train`` and ``resume``, before they plan or enqueue anything."""
    with db.transaction(url) as cur:
        cur.execute("SELECT to_regclass('btc.windows') IS NOT NULL")
        if not cur.fetchone()[0]:
            raise db.SchemaMissing()
