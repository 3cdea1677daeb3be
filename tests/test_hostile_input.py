"""Hostile input gets one line and exit 2, nothing written: bad URLs in the settings (checked at
the settings edge), numbers past their bounds, reversed ranges, output paths in directories that do
not exist; and no URL password is ever printed (CLI error line, window failure reasons)."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.cli import cli
from tests.pipeline_support import query
from worker.errors import BadInput
from worker.redact import redact, redact_text
from worker.settings import MAX_EPOCHS, Settings

URL_VARIABLES = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "OLLAMA_HOST",
    "OPENAI_BASE_URL",
)


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


def one_line(res, *needles: str) -> str:
    """The single error line of a run that must have exited 2 (fails the test otherwise)."""
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qtrain: error: "), res.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    ("name", "value", "needles"),
    [
        ("DATABASE_URL", "notaurl", ("DATABASE_URL='notaurl'", "postgresql://")),
        ("OLLAMA_HOST", "::::", ("OLLAMA_HOST='::::'", "not a valid URL")),
        ("CELERY_BROKER_URL", "redis2://x", ("scheme 'redis2://'", "redis://, rediss://, amqp://")),
        ("CELERY_RESULT_BACKEND", "mongodb://h/0", ("scheme 'mongodb://'", "redis://")),
        ("OPENAI_BASE_URL", "htp://gpu1:8000/v1", ("scheme 'htp://'", "http://, https://")),
        ("OPENAI_BASE_URL", "http://", ("names no valid host",)),
        ("OPENAI_BASE_URL", "http//gpu1/v1", ("no scheme",)),
        ("OPENAI_BASE_URL", "http://user:s3cretPW@gpu1:99999/v1", ("Port out of range", "user:***@")),
        ("OLLAMA_HOST", "gpu one:11434", ("holds spaces", "OLLAMA_HOST")),
    ],
)
def test_a_bad_url_setting_is_one_line_exit_2(name: str, value: str, needles: tuple[str, ...]) -> None:
    line = one_line(run("status", env={name: value}), *needles)
    assert "s3cretPW" not in line


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(URL_VARIABLES), value=st.text(max_size=60))
def test_any_string_in_a_url_setting_is_accepted_or_one_line(name: str, value: str) -> None:
    try:
        s = Settings.from_env({name: value})
    except BadInput as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message and name in message
        return
    for url in (s.database_url, s.broker_url, s.result_backend, *s.ollama_hosts, *s.openai_base_urls):
        assert "://" in url and not any(c.isspace() for c in url)


PASSWORD = st.text(
    alphabet=string.ascii_letters + string.digits + "-._~!$&'()*+,;=%:@", min_size=1, max_size=20
)


@settings(max_examples=300, deadline=None)
@given(
    scheme=st.sampled_from(("http", "https", "postgresql", "redis", "amqp")),
    user=st.text(alphabet=string.ascii_letters + string.digits + "-._", max_size=8),
    password=PASSWORD,
    host=st.sampled_from(("127.0.0.1", "gpu1", "[::1]", "db.example.org")),
    port=st.sampled_from(("", ":9", ":5432")),
    rest=st.sampled_from(("", "/", "/v1", "/0", "/v1/chat/completions")),
    context=st.sampled_from(("{}", 'HTTP Request: POST {} "HTTP/1.1 200 OK"', "x ('{}') y", "{},{}")),
)
def test_redaction_never_shows_a_password(scheme, user, password, host, port, rest, context) -> None:
    url = f"{scheme}://{user}:{password}@{host}{port}{rest}"
    text = context.format(url, url)
    masked = f"{scheme}://{user}:***@{host}{port}{rest}"
    assert redact_text(text) == context.format(masked, masked)  # the password gone, all else kept
    assert redact(url) == masked


def test_redaction_leaves_text_without_credentials_alone() -> None:
    for text in ("http://gpu1:8000/v1", "see http://h:8000/x@y", "notaurl", "a@b.c", "http://u@h/v1", ""):
        assert redact_text(text) == text


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--epochs", "99999999999999999999"), ("--epochs must be from 1 to 1,000",)),
        (("--epochs", "1000000000"), ("--epochs must be from 1 to 1,000",)),
        (("--epochs", "0"), ("--epochs",)),
        (("--window", "99999999999999999999"), ("--window must be from 2",)),
        (("--stride", "0"), ("--stride must be from 1",)),
        (("--seed", "99999999999999999999"), ("--seed must be from 0",)),
        (("--epochs", "abc"), ("'abc' is not a valid integer", "train --help`)")),
        (("--bogus",), ("No such option '--bogus'",)),
        (
            ("--since", "2021-06-01", "--until", "2021-01-01"),
            ("--since 2021-06-01 is after --until 2021-01-01",),
        ),
        (("--since", "2021-06-01", "--until", "2021-06-01"), ("the same moment as",)),
    ],
)
def test_train_options_out_of_bounds_are_one_line_and_write_nothing(database_url, args, needles) -> None:
    res = run("train", "--symbols", "BTC-USDT", *args, env={"DATABASE_URL": database_url})
    line = one_line(res, *needles)
    assert "import more history" not in line and "candles import" not in line
    assert query(database_url, "SELECT count(*) FROM batches") == [(0,)]
    assert MAX_EPOCHS == 1000


@pytest.mark.parametrize(
    "command",
    [
        ("evaluate", "--symbols", "BTC-USDT"),
        ("check-lookahead", "--symbol", "BTC-USDT"),
        ("backtest", "--symbol", "BTC-USDT"),
    ],
)
def test_a_reversed_range_says_so(database_url, command) -> None:
    res = run(*command, "--since", "2021-06-01", "--until", "2021-01-01", env={"DATABASE_URL": database_url})
    one_line(res, "--since 2021-06-01 is after --until 2021-01-01", "swap them")


def _outputs(missing: Path) -> list[tuple[str, ...]]:
    return [
        ("backtest", "--symbol", "BTC-USDT", "--report", str(missing / "r.html")),
        ("evaluate", "--symbols", "BTC-USDT", "--report", str(missing / "r.html")),
        ("paper", "report", "acct", "--out", str(missing / "p.html")),
        ("models", "export", "--symbol", "BTC-USDT", "--out", str(missing / "x.npz")),
    ]


@pytest.mark.parametrize("index", range(4))
def test_an_output_in_a_missing_directory_is_refused_and_nothing_created(
    database_url, tmp_path, index
) -> None:
    missing = tmp_path / "nonexistent" / "dir"
    args = _outputs(missing)[index]
    res = run(*args, env={"DATABASE_URL": database_url, "QTRAIN_MODELS_DIR": str(tmp_path / "models")})
    one_line(res, str(missing), "does not exist")
    assert not (tmp_path / "nonexistent").exists() and not (tmp_path / "models").exists()


def test_the_root_is_never_written_to(database_url) -> None:
    root = Path("/nonexistent")
    if root.exists():
        pytest.skip("/nonexistent exists on this machine")
    res = run(
        "backtest",
        "--symbol",
        "BTC-USDT",
        "--report",
        "/nonexistent/dir/r.html",
        env={"DATABASE_URL": database_url},
    )
    one_line(res, "directory /nonexistent/dir does not exist")
    res = run(
        "models",
        "export",
        "--symbol",
        "BTC-USDT",
        "--out",
        "/nonexistent/dir/x.npz",
        env={"DATABASE_URL": database_url},
    )
    one_line(res, "directory /nonexistent/dir does not exist")
    assert not root.exists()


def test_a_directory_as_a_report_file_is_refused(database_url, tmp_path) -> None:
    res = run(
        "backtest", "--symbol", "BTC-USDT", "--report", str(tmp_path), env={"DATABASE_URL": database_url}
    )
    one_line(res, "is a directory")


def test_an_llm_url_password_is_never_printed(database_url, redis_url) -> None:
    env = {
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": redis_url,
        "QTRAIN_LLM_API": "openai",
        "OPENAI_BASE_URL": "http://user:s3cretPW@127.0.0.1:9/v1",
        "OPENAI_API_KEY": "sk-never-shown",
    }
    line = one_line(run("train", "--symbols", "BTC-USDT", env=env), "user:***@127.0.0.1:9/v1")
    assert "s3cretPW" not in line and "sk-never-shown" not in line


def test_window_failure_reasons_are_redacted() -> None:
    from worker.errors import ServiceUnavailable
    from worker.runtime.tasks import failed_attempt

    exc = ServiceUnavailable("openai http://user:s3cretPW@gpu1:8000/v1: unreachable (ConnectError)")
    for attempt in (1, 4):
        out = failed_attempt(exc, attempt, 4, 0.1)
        assert "s3cretPW" not in out.reason and "user:***@gpu1" in out.reason


def test_httpx_log_lines_are_redacted(caplog) -> None:
    import logging

    from tests.fake_ollama import FakeOllama
    from worker.clients.openai import OpenAIClient
    from worker.redact import install_log_redaction

    install_log_redaction()
    with FakeOllama(models=("smollm2",)) as fake, caplog.at_level(logging.INFO, logger="httpx"):
        base = fake.openai_url.replace("http://", "http://user:s3cretPW@")
        client = OpenAIClient([base], "smollm2", api_key="sk-never-shown")
        try:
            assert client.models() == ["smollm2"]
        finally:
            client.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert any("HTTP Request: GET http://user:***@127.0.0.1" in ln for ln in lines), lines
    assert not any("s3cretPW" in ln or "sk-never-shown" in ln for ln in lines)


@pytest.mark.integration
def test_worker_start_up_line_httpx_lines_and_stored_host_are_redacted(
    database_url, redis_url, tmp_path
) -> None:
    from tests.fake_ollama import FakeOllama
    from tests.pipeline_support import pipeline_env, qtrain, seed_candles, train_json
    from worker.cluster.local import start_workers

    seed_candles(database_url, n=100)
    with FakeOllama(models=("smollm2",), flavor="llama-cpp-python") as fake:
        env = {
            **pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path / "m"),
            "QTRAIN_LLM_API": "openai",
            "OPENAI_BASE_URL": fake.openai_url.replace("http://", "http://user:s3cretPW@"),
            "OPENAI_API_KEY": "sk-never-shown",
            "QTRAIN_LLM_MODEL": "smollm2",
        }
        with start_workers(1, concurrency=1, env=env, log_dir=tmp_path, loglevel="INFO") as workers:
            final = train_json(env, symbols="BTC-USDT")
            shown = qtrain(env, "status", str(final["batch_id"]))
        log = workers.logs[0].read_text(errors="replace")
    assert final["state"] == "done" and final["symbols"]["BTC-USDT"]["failed"] == 0
    assert "hosts=http://user:***@127.0.0.1" in log  # the start-up line
    assert "HTTP Request: POST http://user:***@127.0.0.1" in log  # httpx's own lines
    assert "s3cretPW" not in log and "sk-never-shown" not in log
    assert "s3cretPW" not in shown.stdout + shown.stderr
    hosts = {h for (h,) in query(database_url, "SELECT DISTINCT host FROM ollama_analyses")}
    assert hosts and all("user:***@" in h for h in hosts)


HUGE = "99999999999999999999"


@pytest.mark.parametrize(
    "args",
    [
        ("evaluate", "--symbols", "BTC-USDT", "--train-days", HUGE),
        ("evaluate", "--symbols", "BTC-USDT", "--test-days", HUGE),
        ("evaluate", "--symbols", "BTC-USDT", "--random-seeds", HUGE),
        ("backtest", "--symbol", "BTC-USDT", "--walk-forward", "--folds", HUGE),
        ("backtest", "--symbol", "BTC-USDT", "--walk-forward", "--epochs", HUGE),
        ("check-lookahead", "--symbol", "BTC-USDT", "--cuts", HUGE),
    ],
)
def test_huge_numbers_elsewhere_are_one_line(database_url, args) -> None:
    one_line(run(*args, env={"DATABASE_URL": database_url}), "is not in the range", args[-2])
