"""``qtrain train``, ``qtrain status``, ``qtrain resume``."""

from producer.notbuilt import not_built

COMMANDS = [
    not_built("train", "issue 4", "Create and enqueue a training batch."),
    not_built("status", "issue 4", "Show a batch's progress."),
    not_built("resume", "issue 4", "Re-enqueue what is not done in a batch."),
]
