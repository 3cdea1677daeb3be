"""``qtrain candles import|fetch|list``."""

from producer.notbuilt import not_built_group

candles = not_built_group(
    "candles",
    {
        "import": "Import a CSV of candles.",
        "fetch": "Fetch candles with ccxt.",
        "list": "List stored candles.",
    },
    "issue 3",
    "Import, fetch and list candles.",
)
COMMANDS = [candles]
