"""``qtrain models list|export|promote|rollback``."""

from producer.notbuilt import not_built_group

models = not_built_group(
    "models",
    {"list": "List Q-table versions.", "export": "Export a Q-table."},
    "issue 4",
    "Q-table versions.",
)
COMMANDS = [models]
