"""``qtrain demo``: the whole path on one machine in one command."""

from producer.notbuilt import not_built

COMMANDS = [not_built("demo", "issue 4", "Run the whole pipeline on one machine.")]
