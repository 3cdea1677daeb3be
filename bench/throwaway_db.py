"""A throwaway, migrated PostgreSQL database for a benchmark run (dropped at the end)."""

from __future__ import annotations

import uuid

import psycopg2

from worker.store import db, migrate

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def fresh_db(prefix: str = "qtrain_bench") -> str:
    """Create and migrate a uniquely named database; returns its URL."""
    url = f"postgresql://postgres@127.0.0.1:5432/{prefix}_{uuid.uuid4().hex[:8]}"
    migrate.migrate(url)
    return url


def drop_db(url: str) -> None:
    """Close this process's pooled connections to ``url`` and drop the database."""
    db.close_pools()
    conn = psycopg2.connect(ADMIN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{db.database_name(url)}" WITH (FORCE)')
    conn.close()
