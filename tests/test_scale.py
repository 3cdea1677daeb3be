"""Scale (issue 14), without timing anything: bulk hashes equal the per-window ones, the status
counters equal a count of the windows after any changes, the status queries use indexes at a
realistic size, the CLI starts without importing heavy libraries, enqueue publishes every window.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.analyst.prompt import window_content_hash, window_content_hashes
from model.market.synthetic import make_candles
from producer.cli import COMMANDS, load_command
from tests.pipeline_support import ROOT, pipeline_env, qtrain, seed_candles
from tests.sql import query
from worker.store import batches, db

HEAVY = ("ccxt", "celery", "numpy", "rich", "kombu")


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 120),
    pairs=st.lists(st.tuples(st.integers(0, 119), st.integers(0, 120)), min_size=0, max_size=12),
    symbol=st.sampled_from(["BTC-USDT", "ETH-USDT", "X"]),
    timeframe=st.sampled_from(["1h", "30m"]),
    seed=st.integers(0, 5),
)
def test_bulk_hashes_equal_per_window_hashes(
    n: int, pairs: list[tuple[int, int]], symbol: str, timeframe: str, seed: int
) -> None:
    candles = make_candles(n, seed=seed)
    spans = [(min(a, n), min(max(a, b), n)) for a, b in pairs]
    lo = np.array([a for a, _ in spans], dtype=np.int64)
    hi = np.array([b for _, b in spans], dtype=np.int64)
    bulk = window_content_hashes(candles, lo, hi, symbol=symbol, timeframe=timeframe)
    one = [window_content_hash(candles.slice(a, b), symbol=symbol, timeframe=timeframe) for a, b in spans]
    assert bulk == one


def test_bulk_hashes_refuse_bad_ranges() -> None:
    candles = make_candles(10)
    with pytest.raises(ValueError):
        window_content_hashes(candles, np.array([5]), np.array([11]), symbol="X", timeframe="1h")
    with pytest.raises(ValueError):
        window_content_hashes(candles, np.array([5]), np.array([4]), symbol="X", timeframe="1h")


def _spec(symbols: tuple[str, ...]) -> batches.BatchSpec:
    return batches.BatchSpec(
        symbols=symbols,
        timeframe="1h",
        window_size=48,
        stride=6,
        since=None,
        until=None,
        epochs=1,
        model="heuristic",
        analyst="heuristic",
        prompt_version=1,
        seed=1,
        params={},
    )


def _rows(symbols: tuple[str, ...], per_symbol: int) -> list[tuple[str, int, int, int, str]]:
    t0 = 1_700_000_000
    return [
        (s, i, t0 + 3600 * 6 * i, t0 + 3600 * (6 * i + 47), f"{k:02d}{i:062d}")
        for k, s in enumerate(symbols)
        for i in range(per_symbol)
    ]


def _truth(url: str, batch_id: int) -> tuple[dict[str, dict[str, int]], int, float]:
    """The status counts computed the slow way, straight from the windows."""
    counts: dict[str, dict[str, int]] = {}
    for sym, status, n in query(
        url, "SELECT symbol, status, count(*) FROM windows WHERE batch_id = %s GROUP BY 1, 2", (batch_id,)
    ):
        counts.setdefault(sym, dict.fromkeys(batches.STATUSES, 0))[status] = int(n)
    tokens, ms = query(
        url,
        "SELECT coalesce(sum(a.prompt_tokens + a.completion_tokens), 0),"
        " coalesce(sum(a.total_duration_ms), 0) FROM windows w JOIN ollama_analyses a"
        " ON a.id = w.analysis_id WHERE w.batch_id = %s"
        " AND w.status = 'done'",
        (batch_id,),
    )[0]
    return counts, int(tokens), float(ms) / 1000.0


def _counters(url: str, batch_id: int) -> tuple[dict[str, dict[str, int]], int, float]:
    with db.transaction(url) as cur:
        return batches._symbol_counts(cur, batch_id)


def test_counters_follow_every_kind_of_change(database_url: str) -> None:
    """Bulk insert, single and multi-row updates from several sessions, analyses with token costs,
    deletes and a batch deleted: the counters always equal a count of the windows."""
    url = database_url
    symbols = ("BTC-USDT", "ETH-USDT")
    keep = batches.create_batch(url, _spec(symbols), _rows(symbols, 40))
    gone = batches.create_batch(url, _spec(symbols), _rows(symbols, 5))
    assert _counters(url, keep) == _truth(url, keep)
    rng = random.Random(3)
    conns = [psycopg2.connect(url) for _ in range(3)]
    try:
        with conns[0], conns[0].cursor() as cur:
            cur.execute(
                "INSERT INTO btc.ollama_analyses (cache_key, content_hash, symbol, timeframe, start_ts,"
                " end_ts, model, prompt_version, analyst, prompt_tokens, completion_tokens,"
                " total_duration_ms)"
                " SELECT 'k' || g, 'h' || g, 'BTC-USDT', '1h', now(), now(), 'm', 1, 'ollama',"
                " CASE WHEN g % 4 = 0 THEN NULL ELSE 100 + g END, 20 + g, 1000.5 * g"
                " FROM generate_series(1, 30) g RETURNING id"
            )
            analysis_ids = [r[0] for r in cur.fetchall()]
        for step in range(150):
            conn = rng.choice(conns)
            with conn, conn.cursor() as cur:
                sym, idx = rng.choice(symbols), rng.randrange(40)
                status = rng.choice(batches.STATUSES)
                analysis = rng.choice(analysis_ids) if status in ("done", "cached") else None
                cur.execute(
                    "UPDATE btc.windows SET status = %s, analysis_id = %s WHERE batch_id = %s AND symbol = %s"
                    " AND idx = %s",
                    (status, analysis, keep, sym, idx),
                )
                if step % 25 == 0:  # a multi-row statement (what `resume` or a reaper does)
                    cur.execute(
                        "UPDATE btc.windows SET status = 'pending', analysis_id = NULL WHERE batch_id = %s"
                        " AND idx %% 7 = %s",
                        (keep, step % 7),
                    )
            assert _counters(url, keep) == _truth(url, keep)
        with conns[1], conns[1].cursor() as cur:
            cur.execute("DELETE FROM btc.windows WHERE batch_id = %s AND idx >= 35", (keep,))
            cur.execute("DELETE FROM btc.batches WHERE id = %s", (gone,))
    finally:
        for conn in conns:
            conn.close()
    assert _counters(url, keep) == _truth(url, keep)
    assert sum(v["pending"] + v["done"] for v in _counters(url, keep)[0].values()) > 0
    assert query(url, "SELECT count(*) FROM window_counts WHERE batch_id = %s", (gone,)) == [(0,)]
    st_ = batches.batch_status(url, keep)
    assert st_ is not None and st_.total == 2 * 35


@contextmanager
def _recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any]]]:
    """Every (sql, params) executed through ``db.transaction`` while the block runs."""
    seen: list[tuple[str, Any]] = []
    real = db.transaction

    class Recorder:
        def __init__(self, cur: Any) -> None:
            self._cur = cur

        def execute(self, sql: str, params: Any = None) -> Any:
            seen.append((sql, params))
            return self._cur.execute(sql, params)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._cur, name)

    @contextmanager
    def recording(url: str, **kw: Any) -> Iterator[Any]:
        with real(url, **kw) as cur:
            yield Recorder(cur)

    monkeypatch.setattr(db, "transaction", recording)
    yield seen


def test_status_queries_scan_no_windows_sequentially(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EXPLAIN every statement ``batch_status`` runs, on 50,000 analysed windows in 5 batches."""
    url = database_url
    symbols = ("BTC-USDT", "ETH-USDT", "SOL-USDT", "ADA-USDT", "XRP-USDT")
    ids = [batches.create_batch(url, _spec(symbols), _rows(symbols, 2_000)) for _ in range(5)]
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("UPDATE btc.windows SET status = 'done' WHERE idx % 3 = 0")
        cur.execute("VACUUM ANALYZE btc.windows")
        cur.execute("ANALYZE btc.window_counts")
    with _recording(monkeypatch) as seen:
        st_ = batches.batch_status(url, ids[2])
    assert st_ is not None and st_.total == 10_000
    assert sum(s.done for s in st_.symbols.values()) == 5 * 667
    assert seen, "batch_status ran no statement through db.transaction"
    with conn.cursor() as cur:
        for sql, params in seen:
            cur.execute("EXPLAIN " + sql, params)
            plan = "\n".join(r[0] for r in cur.fetchall())
            assert "Seq Scan on windows" not in plan, f"{sql}\n{plan}"
            if "lost > 0" in sql:  # the reclaimed count reads only the windows that lost a worker
                assert "windows_reclaimed" in plan, plan
    conn.close()


def _imported_after(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
    )
    assert out.returncode == 0, out.stderr
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    return sorted({m.split(".")[0] for m in modules} & set(HEAVY))


def test_cli_start_imports_no_heavy_library() -> None:
    assert _imported_after("import producer.cli") == []
    help_run = (
        "import sys\nfrom producer.cli import main\nsys.argv = ['qtrain', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    assert _imported_after(help_run) == []
    # `qtrain status` needs PostgreSQL only: its module pulls neither ccxt, Celery, numpy nor rich
    assert _imported_after("import producer.train_cmd") == []
    assert "ccxt" not in _imported_after("import producer.candles_cmd")


def test_command_table_matches_the_modules() -> None:
    """``producer.cli.COMMANDS`` names the right module and repeats each command's own help."""
    listed = set()
    for path in sorted(Path(ROOT, "producer").glob("*_cmd.py")):
        module = __import__(f"producer.{path.stem}", fromlist=["COMMANDS"])
        for command in module.COMMANDS:
            assert COMMANDS[command.name][0] == path.stem, command.name
            listed.add(command.name)
    assert listed == set(COMMANDS)
    import click

    for name, (_, short) in COMMANDS.items():
        command = load_command(name)
        assert command is not None
        assert command.get_short_help_str(1000) == click.Command(name, help=short).get_short_help_str(1000)


@pytest.mark.integration
def test_enqueue_publishes_every_window_once_with_progress(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    """No worker: every window is one message in the queue, pipelined in chunks, without a result
    key; ``--wait`` shows the enqueue progress, then times out waiting (exit 2, one line)."""
    import redis
    from celery.utils.saferepr import saferepr

    seed_candles(database_url, n=1200)
    env = pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path / "models")
    proc = qtrain(
        env,
        "train",
        "--symbols",
        "BTC-USDT,ETH-USDT",
        "--analyst",
        "heuristic",
        "--stride",
        "1",
        "--wait",
        "--timeout",
        "1",
    )
    assert proc.returncode == 2, proc.stderr
    assert "enqueue" in proc.stderr and "not done after" in proc.stderr.strip().splitlines()[-1]
    batch_id = int(query(database_url, "SELECT max(id) FROM batches")[0][0])
    total = query(database_url, "SELECT count(*) FROM windows WHERE batch_id = %s", (batch_id,))[0][0]
    assert total == 2 * (1200 - 48 + 1) > 1000  # more than one publish chunk
    r = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    raw = r.lrange("analyze", 0, -1)
    seen = set()
    for item in raw:
        message = json.loads(item)
        assert message["headers"]["task"] == "qtrain.analyze_window"
        assert message["headers"]["ignore_result"] is True
        args = json.loads(__import__("base64").b64decode(message["body"]))[0]
        # the reprs Flower shows are formatted by qtrain, exactly as Celery's saferepr would
        assert message["headers"]["argsrepr"] == saferepr(tuple(args))
        assert message["headers"]["kwargsrepr"] == saferepr({})
        seen.add(tuple(args))
    assert len(raw) == len(seen) == total
    assert {a[0] for a in seen} == {batch_id}
    backend = redis.Redis.from_url(env["CELERY_RESULT_BACKEND"])
    assert not backend.keys("celery-task-meta-*")
