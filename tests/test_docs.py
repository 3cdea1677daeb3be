"""The docs site cannot drift from the code: the generated references name every environment
variable the code reads and every ``qtrain`` command, and the README stays a landing page whose
links resolve. (``mkdocs build --strict`` in scripts/test checks the site's own links.)"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from worker.settings import AGENT_PREFIXES, RETRAIN_PREFIXES, Settings
from worker.settings_doc import SETTINGS, UNDOCUMENTED, documented_names, settings_table

ROOT = Path(__file__).resolve().parents[1]
#: An environment variable qtrain itself reads, quoted or backquoted in its sources.
ENV_NAME = re.compile(r"[\"'`]((?:QTRAIN|OLLAMA|OPENAI|CELERY|DATABASE|FLOWER)_[A-Z0-9_]*[A-Z0-9])[\"'`]")
#: Kept as given by ``Settings`` and parsed (with their defaults) by ``worker.pipeline.promotion``.
HANDED_ON = {"QTRAIN_PROMOTION_MIN_DAYS", "QTRAIN_PROMOTION_MIN_TRADES"}


def _hook() -> ModuleType:
    """docs/hooks/reference.py, the mkdocs hook that renders the references."""
    spec = importlib.util.spec_from_file_location(
        "qtrain_docs_hook", ROOT / "docs" / "hooks" / "reference.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_env_names() -> set[str]:
    """Every complete environment variable name quoted in worker/ and producer/ sources."""
    return {
        name
        for room in ("worker", "producer")
        for path in (ROOT / room).rglob("*.py")
        if path.name != "settings_doc.py"
        for name in ENV_NAME.findall(path.read_text())
    }


def test_the_configuration_reference_names_every_variable_the_code_reads() -> None:
    read = code_env_names()
    assert {"DATABASE_URL", "OLLAMA_HOST", "QTRAIN_LEASE_S", "QTRAIN_RETRAIN_CRON", "QTRAIN_WEIGHTS"} <= read
    missing = sorted(read - documented_names() - set(UNDOCUMENTED))
    assert missing == [], f"add these to worker/settings_doc.py: {missing}"
    table = _hook().settings_reference()
    for name in documented_names():
        assert f"`{name}`" in table


def test_the_configuration_reference_names_nothing_the_code_does_not_read() -> None:
    sources = [
        p
        for room in ("worker", "producer")
        for p in (ROOT / room).rglob("*.py")
        if p.name != "settings_doc.py"
    ]
    text = "\n".join(p.read_text() for p in [*sources, ROOT / "scripts" / "bootstrap.sh"])
    gone = sorted(n for n in documented_names() if not re.search(rf"\b{n}\b", text))
    assert gone == [], f"no longer read by the code, drop from worker/settings_doc.py: {gone}"


def _documented_defaults() -> list[tuple[str, str]]:
    """(variable, the default the reference shows) for every literal default, ``a / b`` rows split."""
    pairs = []
    for var in SETTINGS:
        defaults = [d.strip().strip("`") for d in var.default.split(" / ")]
        if len(defaults) == len(var.names) and var.default.startswith("`"):
            pairs += [(n, d) for n, d in zip(var.names, defaults, strict=True) if not d.isupper()]
    # the variables Settings hands on as given are parsed, and defaulted, by their own modules
    return [
        (n, d) for n, d in pairs if not n.startswith(RETRAIN_PREFIXES + AGENT_PREFIXES) and n not in HANDED_ON
    ]


def test_the_defaults_checked_are_most_of_them() -> None:
    assert len(_documented_defaults()) >= 18


@pytest.mark.parametrize(("name", "default"), _documented_defaults())
def test_a_documented_default_is_the_default(name: str, default: str) -> None:
    """Setting a variable to the default the reference shows changes nothing."""
    assert Settings.from_env({name: default}) == Settings.from_env({})


def test_the_table_is_well_formed() -> None:
    rows = settings_table().splitlines()
    assert rows[0] == "| variable | default | meaning |"
    assert all(row.count(" | ") == 2 for row in rows[2:]), "a | inside a cell breaks the table"


def test_the_cli_reference_has_every_command_with_clicks_own_help() -> None:
    from click.testing import CliRunner

    from producer.cli import COMMANDS, cli

    reference = _hook().cli_reference()
    for name in COMMANDS:
        assert f"## `qtrain {name}`" in reference, name
    shown = {path for path, _ in _hook().walk(cli, "qtrain")}
    assert {
        "qtrain candles import",
        "qtrain models export",
        "qtrain paper start",
        "qtrain llm check",
    } <= shown
    help_text = CliRunner().invoke(cli, ["train", "--help"], prog_name="qtrain", terminal_width=100).output
    assert "--symbols" in help_text and help_text.strip() in reference


def test_the_hook_fills_the_markers_and_the_pages_hold_them() -> None:
    hook = _hook()
    page = hook.on_page_markdown(f"a\n{hook.SETTINGS_MARKER}\n{hook.CLI_MARKER}\n")
    assert hook.SETTINGS_MARKER not in page and "| `DATABASE_URL` |" in page and "## `qtrain train`" in page
    assert hook.SETTINGS_MARKER in (ROOT / "docs" / "configuration.md").read_text()
    assert hook.CLI_MARKER in (ROOT / "docs" / "cli.md").read_text()


def test_the_readme_is_a_landing_page_whose_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert len(local) >= 15, local
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.is_file(), f"README links to {link}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(), flags=re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, f"README links to {link}: no such heading"


def test_the_readme_gives_the_test_command_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "\nscripts/test\n" in readme or "scripts/test     #" in readme
    assert "\nbash scripts/test\n" in (ROOT / ".ci" / "run").read_text()
    assert "mkdocs build --strict" in (ROOT / "scripts" / "test").read_text()


def test_every_docs_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.name for p in (ROOT / "docs").glob("*.md")]
    assert len(pages) >= 16
    for page in pages:
        assert f" {page}" in nav, f"docs/{page} is not in mkdocs.yml's nav"
