"""``qtrain models``: list with holdout metrics, promote/rollback with who/when, export with sha256."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from model.learning.qlearning import FastQLearning
from producer import models_cmd
from producer.cli import cli
from tests.evaluation_support import (
    MOMENTUM_SPACE,
    heuristic_version,
    insert_candles_of,
    insert_version,
    momentum_table,
    settings_for,
    zigzag_candles,
)
from tests.pipeline_support import query, seed_candles
from worker.pipeline import promotion, records
from worker.store.versions import model_path

SYMBOL = "ZIG-USDT"


@pytest.fixture
def env(database_url, tmp_path, monkeypatch):
    c = zigzag_candles(600, symbol=SYMBOL)
    insert_candles_of(database_url, c)
    span = {"train_since": int(c.ts[0]), "train_until": int(c.ts[400]), "holdout_until": int(c.ts[-1]) + 3600}
    settings = settings_for(database_url, tmp_path / "models")
    for kind in ("flat", "contrarian", "momentum"):  # v1 promoted, v2 refused, v3 promoted
        v = insert_version(database_url, SYMBOL, momentum_table(kind), MOMENTUM_SPACE, **span)
        promotion.evaluate_and_promote(
            settings, SYMBOL, v, config=promotion.PromotionConfig(min_days=0, min_trades=0)
        )
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("QTRAIN_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("COLUMNS", "220")
    return settings


def run(*args):
    return CliRunner().invoke(cli, list(args))


def _promoted(url):
    return [r[0] for r in query(url, "SELECT version FROM agent_state WHERE promoted")]


def test_list_shows_versions_metrics_and_promoted(env):
    res = run("models", "list", "--symbol", SYMBOL, "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [(r["version"], r["promoted"]) for r in rows] == [(1, False), (2, False), (3, True)]
    h = rows[2]["holdout"]
    assert h["metric"] == "sharpe" and h["value"] > 1 and h["buy_and_hold_value"] < 0
    assert h["total_return_pct"] > 0 and h["max_drawdown_pct"] >= 0 and h["buy_and_hold_return_pct"] < 0
    assert rows[2]["promoted_by"] == "gate"
    table = run("models", "list")
    assert table.exit_code == 0 and "ZIG-USDT" in table.output and "* (gate)" in table.output


def test_promote_rollback_export_round_trip(env, tmp_path):
    url = env.database_url
    res = run("models", "promote", "--symbol", SYMBOL, "--version", "2", "--by", "alice", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["previous"] == 3 and _promoted(url) == [2]
    blob2 = bytes(query(url, "SELECT npz FROM agent_state WHERE version = 2")[0][0])
    assert model_path(env.models_dir, SYMBOL).read_bytes() == blob2
    sidecar = json.loads(model_path(env.models_dir, SYMBOL).with_suffix(".json").read_text())
    assert sidecar["version"] == 2 and sidecar["promoted"] is True
    assert query(url, "SELECT promoted_by FROM agent_state WHERE version = 2") == [("alice",)]

    assert run("models", "rollback", "--symbol", SYMBOL, "--by", "bob").exit_code == 0
    assert _promoted(url) == [3]  # back to the one promoted before v2
    assert run("models", "rollback", "--symbol", SYMBOL).exit_code == 0
    assert _promoted(url) == [1]  # and before that, v1 (the gate's first promotion)
    assert run("models", "rollback", "--symbol", SYMBOL, "--to", "3").exit_code == 0
    assert _promoted(url) == [3]
    log = query(url, "SELECT version, kind, by FROM promotions ORDER BY id")
    assert log[-4:][0] == (2, "manual", "alice") and log[-3][1:] == ("rollback", "bob")

    out = tmp_path / "export" / "table.npz"
    res = run("models", "export", "--symbol", SYMBOL, "--out", str(out))
    assert res.exit_code == 2 and "does not exist" in res.output and not out.parent.exists()  # never created
    out.parent.mkdir()
    res = run("models", "export", "--symbol", SYMBOL, "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    stored = query(url, "SELECT sha256 FROM agent_state WHERE version = 3")[0][0]
    assert got["version"] == 3 and got["promoted"] and got["sha256"] == stored
    assert hashlib.sha256(out.read_bytes()).hexdigest() == stored
    learner, meta = FastQLearning.load(out)
    assert meta["symbol"] == SYMBOL and (learner.q == momentum_table("momentum").q).all()
    assert json.loads(out.with_suffix(".json").read_text())["file_sha256"] == stored
    res = run("models", "export", "--symbol", SYMBOL, "--version", "2", "--out", str(out))
    assert res.exit_code == 0 and "v2 (not promoted)" in res.output and "verified" in res.output
    # An existing directory: the file goes inside it, under the name the models directory uses.
    res = run("models", "export", "--symbol", SYMBOL, "--out", str(out.parent), "--json")
    assert res.exit_code == 0, res.output
    inside = out.parent / model_path(".", SYMBOL).name
    assert (
        json.loads(res.output)["path"] == str(inside)
        and hashlib.sha256(inside.read_bytes()).hexdigest() == stored
    )
    assert not out.parent.with_name("export.npz").exists()


def test_backtest_export_and_lookahead_default_to_the_same_version_and_say_which(env, tmp_path):
    """Issue 29: `backtest` used the latest version while `models export` and `signal` used the
    promoted one. Now all default to the promoted one (else the latest) and say which."""
    out = str(tmp_path / "t.npz")

    def used() -> tuple[int, int, str, str]:
        bt = json.loads(run("backtest", "--symbol", SYMBOL, "--json").output)
        ex = run("models", "export", "--symbol", SYMBOL, "--out", out)
        la = json.loads(run("check-lookahead", "--symbol", SYMBOL, "--cuts", "2", "--json").output)
        return bt["version"], int(ex.output.split(" v")[1].split(" ")[0]), bt["notes"][0], la["note"]

    run("models", "promote", "--symbol", SYMBOL, "--version", "1", "--by", "test")
    bt, ex, note, la = used()
    assert bt == ex == 1 and note == "version: v1, the promoted one" and la == "Q-table v1, the promoted one"
    query_commit(env.database_url, "UPDATE agent_state SET promoted = false")
    bt, ex, note, la = used()
    assert bt == ex == 3 and note.startswith("version: v3, the latest (no version of ZIG-USDT is promoted")
    assert "(latest, not promoted)" in run("models", "export", "--symbol", SYMBOL, "--out", out).output


def test_tampered_table_is_not_exported(env, tmp_path):
    query_commit(env.database_url, "UPDATE agent_state SET sha256 = repeat('0', 64) WHERE version = 3")
    res = run("models", "export", "--symbol", SYMBOL, "--out", str(tmp_path / "x.npz"))
    assert res.exit_code == 2 and "sha256" in res.output and not (tmp_path / "x.npz").exists()


def query_commit(url, sql):
    import psycopg2

    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["promote", "--symbol", SYMBOL, "--version", "9"], "qtrain models list"),
        (["rollback", "--symbol", "DOGE-USDT"], "no previously promoted version"),
        (["rollback", "--symbol", SYMBOL, "--to", "42"], "no version 42"),
        (["export", "--symbol", "DOGE-USDT", "--out", "/tmp/never.npz"], "qtrain models list"),
        (["export", "--symbol", SYMBOL, "--version", "7", "--out", "/tmp/never.npz"], "no version 7"),
        (["export", "--symbol", SYMBOL, "--out", "/proc/nope/x.npz"], "--out"),
    ],
)
def test_bad_input_is_one_line_exit_2(env, args, needle):
    res = run("models", *args)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]


def test_list_when_empty(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    res = run("models", "list")
    assert res.exit_code == 0 and "no Q-table versions" in res.output
    assert json.loads(run("models", "list", "--json").output) == []


def test_list_shows_what_the_llm_adds_and_the_incumbent_margin(database_url, tmp_path, monkeypatch):
    seed_candles(database_url, n=360, symbols={"BTC-USDT": (6, 30_000.0)})  # the twin wins here (sweep)
    heuristic_version(settings_for(database_url, tmp_path), "BTC-USDT", recipe="sweep")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "220")
    row = json.loads(run("models", "list", "--json").output)[0]
    ab = row["ablation"]
    assert ab["served"] == "unshaped" and ab["margin"] == pytest.approx(ab["llm_shaped"] - ab["unshaped"])
    assert ab["margin"] < 0 and row["gate"]["ablation"]["margin"] == pytest.approx(ab["margin"])
    assert [b["bar"] for b in row["gate"]["bars"]] == ["buy_and_hold", "random_median"]  # no incumbent yet
    table = run("models", "list").output
    assert "LLM adds" in table and "unshaped twin" in table and "content adds" in table
    # the negative controls: what the analyses' content adds over the best of them
    best = max(("shuffled", "constant"), key=lambda c: ab["controls"][c])
    assert ab["best_control"] == best and ab["content_margin"] == pytest.approx(
        ab["llm_shaped"] - ab["controls"][best]
    )
    # a 3-day tail (360 candles): its annualised Sharpe and margins are not shown, its evidence is
    (line,) = [ln for ln in table.splitlines() if "BTC-USDT" in ln]
    assert f"{ab['margin']:+.3g}" not in line and line.count("n/a") == 6, line
    assert f"over {best}" not in line, line
    assert "3 d, " in line and "(too little)" in line, line


def test_a_bad_controls_setting_is_one_line_exit_2(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("QTRAIN_PROMOTION_CONTROLS", "sometimes")
    res = run("models", "list")
    assert res.exit_code == 2, res.output
    (line,) = res.output.strip().splitlines()
    assert "QTRAIN_PROMOTION_CONTROLS 'sometimes' is not one of show, require" in line


def test_incumbent_margin_in_the_list(env):
    rows = json.loads(run("models", "list", "--symbol", SYMBOL, "--json").output)
    assert rows[0]["holdout"]["margins"].get("incumbent") is None  # v1 had no promoted version to beat
    inc = rows[1]["holdout"]
    assert inc["incumbent_version"] == 1 and inc["margins"]["incumbent"] < 0  # contrarian lost to v1
    assert rows[1]["ablation"] is None and "incumbent" in rows[1]["gate"]["decided_by"]


def test_the_cli_holds_no_sql():
    source = Path(models_cmd.__file__).read_text()
    assert not re.search(r"\b(SELECT|INSERT|UPDATE|DELETE)\b|execute\(", source)


def test_the_gate_line_of_a_version_promoted_by_hand(env):
    assert run("models", "promote", "--symbol", SYMBOL, "--version", "2", "--by", "alice").exit_code == 0
    recs = records.version_records(env.database_url, SYMBOL, promotion.PromotionConfig())
    line = records.gate_line(recs[1])
    assert "-> promoted by alice (the gate said no: decided by buy-and-hold" in line, line
    assert "promoted then, since replaced" in records.gate_line(recs[2])
