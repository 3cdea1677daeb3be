"""``qtrain db init``: create the database if missing and apply migrations (idempotent)."""

from __future__ import annotations

import json

import click

from worker.settings import Settings
from worker.store import migrate
from worker.store.db import redact


@click.group(name="db")
def db_group() -> None:
    """Database administration."""


@db_group.command(name="init")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def init(as_json: bool) -> None:
    """Create the database named in DATABASE_URL if missing and apply pending migrations."""
    settings = Settings.from_env()
    result = migrate.migrate(settings.database_url)
    if as_json:
        click.echo(json.dumps(result))
        return
    where = redact(settings.database_url)
    if result["database_created"]:
        click.echo(f"created database {where}")
    applied = result["applied"]
    click.echo(
        f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied else f"{where} is up to date"
    )


COMMANDS = [db_group]
