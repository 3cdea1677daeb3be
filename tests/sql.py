"""One-connection SQL helpers for tests (outside qtrain's pool, so they see committed state only)."""

from __future__ import annotations

from typing import Any

import psycopg2


def query(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one read-only query on its own connection."""
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def execute(database_url: str, statement: str) -> None:
    """Run one statement in autocommit (CREATE/DROP DATABASE, ALTER ...)."""
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()
