"""Entry point of the ``qtrain`` command: a click group whose subcommands live in small modules.

Any ``QtrainError`` (bad input, unreachable service, ...) is printed as one line on stderr with
exit code 2; a traceback is a bug.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from worker.errors import QtrainError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QtrainError as exc:
            click.echo(f"qtrain: error: {exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("qtrain: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qtrain")
def cli() -> None:
    """qtrain: LLM-guided training of tabular Q-learning trading agents, distributed with Celery."""


def _register() -> None:
    from producer import backtest_cmd, candles_cmd, db_cmd, demo_cmd, evaluate_cmd, models_cmd, train_cmd

    for module in (db_cmd, candles_cmd, train_cmd, backtest_cmd, evaluate_cmd, models_cmd, demo_cmd):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    """Run the CLI (console script ``qtrain`` and ``python -m producer``)."""
    cli.main(prog_name="qtrain")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
