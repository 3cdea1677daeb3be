"""Placeholders for subcommands planned in DESIGN.md but not built yet (non-zero exit)."""

from __future__ import annotations

import click


def not_built(name: str, issue: str, help_text: str) -> click.Command:
    """A command that says it is not built yet and exits 2, so scripts notice."""

    @click.command(
        name=name,
        help=f"(not built yet: {issue}) {help_text}",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    @click.pass_context
    def _cmd(ctx: click.Context) -> None:
        click.echo(f"qtrain {ctx.command_path.split(' ', 1)[-1]}: not built yet ({issue})", err=True)
        ctx.exit(2)

    return _cmd


def not_built_group(name: str, subcommands: dict[str, str], issue: str, help_text: str) -> click.Group:
    """A group whose subcommands are all ``not_built``."""
    group = click.Group(name=name, help=help_text)
    for sub, text in subcommands.items():
        group.add_command(not_built(sub, issue, text))
    return group
