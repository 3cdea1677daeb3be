"""Entry point of the ``qtrain`` command: a click group whose subcommands live in small modules.

The group is lazy: a command's module (and whatever heavy library it needs: ccxt, Celery, numpy,
rich) is imported only when that command runs, so ``qtrain --help`` and ``qtrain status`` start in
a fraction of the time. ``COMMANDS`` names each command's module and repeats its one-line help for
the group's help page (tests/test_scale.py checks both against the modules themselves).

Any ``QtrainError`` (bad input, unreachable service, ...) and any usage error click finds (an
unknown option, a number out of its range) is printed as one line on stderr with exit code 2, with
every URL's password masked (``worker.redact``); a traceback is a bug.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from worker.errors import QtrainError
from worker.redact import install_log_redaction, redact_text

#: Command name -> (module under ``producer``, the command's short help as its docstring says).
COMMANDS: dict[str, tuple[str, str]] = {
    "db": ("db_cmd", "Database administration."),
    "candles": ("candles_cmd", "Import, fetch and list candles."),
    "train": ("train_cmd", "Create a training batch, enqueue one analysis per window, print the batch id."),
    "status": (
        "train_cmd",
        "Per symbol: windows total / done / cached / failed / skipped, reducer state, ETA (default: latest).",
    ),
    "resume": (
        "train_cmd",
        "Re-enqueue what is not finished (after a broker loss, say); safe any number of times.",
    ),
    "backtest": (
        "backtest_cmd",
        "Compare the Q-table, the ensemble and baselines on the same range (fees, no look-ahead).",
    ),
    "check-lookahead": (
        "backtest_cmd",
        "Recompute features, states and decisions on truncated histories; exit 1 if a past value changed.",
    ),
    "evaluate": (
        "evaluate_cmd",
        "Walk-forward scoreboard: each fold trains on its past only and is tested on the next range;"
        " every policy (Q-table per recipe, rules, buy-and-hold, random median, flat) out of sample.",
    ),
    "models": ("models_cmd", "Q-table versions: list, export, promote, roll back."),
    "demo": (
        "demo_cmd",
        "Run the whole pipeline on this machine in its own database: db init, synthetic candles,"
        " workers, training, summary (see `qtrain demo` in the README).",
    ),
    "signal": (
        "signal_cmd",
        "Decide now with the promoted version: action, confidence, score and every component.",
    ),
    "paper": ("paper_cmd", "Paper trading with the promoted Q-tables (no real orders, no API keys)."),
    "flower": (
        "flower_cmd",
        "Start Flower with credentials required, on 127.0.0.1 by default; other options go to Flower.",
    ),
    "llm": ("llm_cmd", "The configured LLM: check its answers before a long batch."),
}


def load_command(name: str) -> click.Command | None:
    """Import the module of command ``name`` and return the command (None when there is none)."""
    entry = COMMANDS.get(name)
    if entry is None:
        return None
    module = importlib.import_module(f"producer.{entry[0]}")
    for command in module.COMMANDS:
        if command.name == name:
            return command  # type: ignore[no-any-return]
    raise RuntimeError(f"producer.{entry[0]} has no command {name!r} (fix producer.cli.COMMANDS)")


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from ``COMMANDS``: help imports no command module."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = [(n, click.Command(n, help=COMMANDS[n][1]).get_short_help_str(limit)) for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QtrainError as exc:
            click.echo(f"qtrain: error: {redact_text(str(exc))}", err=True)
            ctx.exit(2)
        except click.UsageError as exc:  # click's own text is three lines (usage, hint, error)
            where = exc.ctx.command_path if exc.ctx is not None else "qtrain"
            message = " ".join(redact_text(exc.format_message()).split())
            click.echo(f"qtrain: error: {message} (see `{where} --help`)", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("qtrain: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qtrain")
def cli() -> None:
    """qtrain: LLM-guided training of tabular Q-learning trading agents, distributed with Celery."""


def main() -> None:
    """Run the CLI (console script ``qtrain`` and ``python -m producer``)."""
    install_log_redaction()
    cli.main(prog_name="qtrain")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
