"""Click option pieces whose values come from heavy modules, computed when first needed.

A command module is imported whenever its command runs (``qtrain status`` imports
``producer.train_cmd``); option choices and defaults taken from ``model.learning.training`` or
``worker.pipeline.dispatch`` would otherwise import numpy and the whole model at start for every command of
that module. These resolve on first use: help rendering or parsing that option's value.
"""

from __future__ import annotations

import importlib
from typing import Any

import click


def _attr(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


class LazyChoice(click.Choice):  # type: ignore[type-arg]
    """``click.Choice`` over the (sorted) values of ``"package.module.NAME"``, loaded on first use."""

    def __init__(self, path: str, case_sensitive: bool = True) -> None:
        self._path = path
        self._loaded: tuple[str, ...] | None = None
        super().__init__((), case_sensitive=case_sensitive)

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        """The allowed values (imports their module the first time)."""
        if self._loaded is None:
            self._loaded = tuple(sorted(_attr(self._path)))
        return self._loaded

    @choices.setter
    def choices(self, _value: Any) -> None:
        """Ignored: ``click.Choice.__init__`` assigns the (empty) eager tuple."""


class LazyDefaultOption(click.Option):
    """``click.Option`` whose default is the value of ``lazy_default="package.module.NAME"``."""

    def __init__(self, *args: Any, lazy_default: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy_default = lazy_default

    def get_default(self, ctx: click.Context, call: bool = True) -> Any:
        """The named value (shown by ``--help`` with ``show_default``; used when the flag is absent)."""
        return _attr(self._lazy_default)
