"""Flower's pages render qtrain's tasks in headless Chromium (DOM and a screenshot that is not blank).

Needs the Debian package ``chromium``: skipped without it, a failure under ``CI=true``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.flower_support import TASKS_COLUMNS, Flower, qtrain_tasks, run_flower, wait_for
from tests.pipeline_support import pipeline_env, seed_candles, train_json
from tests.services import require_chromium
from worker.cluster.local import start_workers

pytestmark = pytest.mark.integration


def _browse(
    exe: str, flower: Flower, path: str, profile: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    user, password = flower.auth
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
        "--virtual-time-budget=8000",
        *extra,
        f"http://{user}:{password}@127.0.0.1:{flower.port}{path}",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def test_flower_tasks_page_shows_qtrain_tasks(database_url: str, redis_url: str, tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    exe = require_chromium()
    seed_candles(database_url, n=120)
    env = pipeline_env(database_url, redis_url, "http://127.0.0.1:9", tmp_path / "models")
    with run_flower(env, tmp_path, f"--tasks_columns={TASKS_COLUMNS}") as flower:
        with start_workers(1, concurrency=1, env=env, log_dir=tmp_path, loglevel="INFO"):
            final = train_json(env, "--analyst", "heuristic")
            wait_for(
                "Flower to know the reducers",
                lambda: len(qtrain_tasks(flower).get("qtrain.reduce_symbol", [])) >= 2,
                timeout=20,
                flower=flower,
            )
            batch = final["batch_id"]
            # The tasks page fills its table by ajax: the DOM after the virtual-time budget has the rows.
            dom = _browse(exe, flower, "/tasks", tmp_path / "p1", "--dump-dom").stdout
            rows = re.findall(r"<tr id=\"([0-9a-f-]{36})\".*?</tr>", dom, re.S)
            assert len(rows) >= 10, f"{len(rows)} task rows on /tasks: {dom[-1500:]}"
            for text in ("qtrain.analyze_window", "qtrain.reduce_symbol", "SUCCESS", "BTC-USDT", "ETH-USDT"):
                assert text in dom, f"{text} not on /tasks"
            for symbol in ("BTC-USDT", "ETH-USDT"):  # the args column: (batch, symbol, window index)
                shown = {
                    int(i) for i in re.findall(rf"\({batch}, (?:'|&#39;){symbol}(?:'|&#39;), (\d+)\)", dom)
                }
                assert shown == {0, 1, 2, 3}, (symbol, shown)
            # A task's own page (server-rendered) has its name, args and state.
            uuid = next(
                iter(
                    t
                    for t, info in flower.get("/api/tasks").json().items()
                    if info["name"] == "qtrain.analyze_window"
                )
            )
            page = _browse(exe, flower, f"/task/{uuid}", tmp_path / "p3", "--dump-dom").stdout
            assert "qtrain.analyze_window" in page and "SUCCESS" in page
            assert re.search(rf"\({batch}, (?:'|&#39;)(BTC|ETH)-USDT(?:'|&#39;), \d\)", page), page[-1500:]
            png = tmp_path / "tasks.png"
            shot = _browse(exe, flower, "/tasks", tmp_path / "p2", f"--screenshot={png}")
            assert png.exists(), f"no screenshot; chromium said: {shot.stderr[-2000:]}"
    img = np.asarray(image.open(png).convert("RGB"))
    assert img.shape[:2] == (1000, 1400)
    flat = img.reshape(-1, 3)
    non_white = float(np.mean(np.any(flat < 235, axis=1)))
    colours = len(np.unique(flat, axis=0))
    assert non_white > 0.02 and colours > 50, f"screenshot looks blank ({non_white:.2%}, {colours} colours)"
