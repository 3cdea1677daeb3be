"""mkdocs hook: render the configuration and CLI references from the code at build time.

A page holds a marker (``<!-- qtrain:settings -->``, ``<!-- qtrain:cli -->``) where the reference
goes; this hook replaces it with the table of ``worker.settings_doc`` or with click's own help of
every ``qtrain`` command, so neither can drift from the code (tests/test_docs.py checks both).
"""

from __future__ import annotations

from typing import Any

import click

SETTINGS_MARKER = "<!-- qtrain:settings -->"
CLI_MARKER = "<!-- qtrain:cli -->"
#: Width click wraps the help text at (the docs' code blocks, not a terminal).
WIDTH = 100


def walk(command: click.Command, path: str, parent: click.Context | None = None) -> list[tuple[str, str]]:
    """(``qtrain sub cmd``, its help text) for ``command`` and every subcommand under it, depth first."""
    name = path.split()[-1]
    ctx = click.Context(command, info_name=name, parent=parent, terminal_width=WIDTH, max_content_width=WIDTH)
    found = [(path, command.get_help(ctx))]
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                found += walk(sub, f"{path} {name}", ctx)
    return found


def cli_reference() -> str:
    """Every ``qtrain`` command's ``--help``, one section each, as Markdown."""
    from producer.cli import cli

    parts = []
    for path, text in walk(cli, "qtrain"):
        level = "##" if path.count(" ") <= 1 else "###"  # qtrain and its commands; their subcommands
        parts.append(f"{level} `{path}`\n\n```text\n{text}\n```\n")
    return "\n".join(parts)


def settings_reference() -> str:
    """The environment variables' table (``worker.settings_doc``)."""
    from worker.settings_doc import settings_table

    return settings_table()


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs event: put the generated references where their markers are."""
    if SETTINGS_MARKER in markdown:
        markdown = markdown.replace(SETTINGS_MARKER, settings_reference())
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return markdown
