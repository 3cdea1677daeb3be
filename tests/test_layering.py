"""The import graph of qtrain's own modules: producer -> worker -> model, never back, and no cycle.

Built from the source with ``ast``, counting every import, including those inside functions (a
lazy import hides a cycle from Python, not from a reader).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "worker", "producer")
LAYER = {"model": 0, "worker": 1, "producer": 2}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the three packages: dotted name -> file."""
    return {_module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported dotted name lives in (``worker.store.db.transaction`` -> its module)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> project modules it imports (anywhere in the file)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                found = _resolve(t, modules)
                if found is not None and found != mod:
                    graph[mod].add(found)
    # ``from worker import db`` names the submodule, not the package: drop the package edge it adds
    for deps in graph.values():
        for dep in list(deps):
            if modules[dep].name == "__init__.py" and any(d.startswith(dep + ".") for d in deps):
                deps.discard(dep)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return [*stack[stack.index(d) :], d]
            if d not in state and (c := visit(d)) is not None:
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)) is not None:
            return c
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports that point up the layers (model -> worker, worker -> producer, ...)."""
    layer = {m: LAYER[m.split(".")[0]] for m in graph}
    return sorted((m, d) for m, deps in graph.items() for d in deps if layer[d] > layer[m])


def test_no_import_cycle_and_no_upward_import() -> None:
    graph = import_graph(project_modules())
    assert len(graph) > 40
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"
    assert upward_imports(graph) == []


def test_the_checks_catch_what_they_guard_against(tmp_path: Path) -> None:
    """The checker itself: a lazy cycle and an upward import in a scratch tree are found."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "model" / "a.py").write_text("def f():\n    from worker import b\n")
    (tmp_path / "worker" / "b.py").write_text("from model.a import f\nfrom producer.c import g\n")
    (tmp_path / "producer" / "c.py").write_text("from worker.b import f as g\n")
    graph = import_graph(project_modules(tmp_path))
    assert graph["model.a"] == {"worker.b"} and graph["worker.b"] == {"model.a", "producer.c"}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert ("model.a", "worker.b") in upward_imports(graph) and ("worker.b", "producer.c") in upward_imports(
        graph
    )


@pytest.mark.parametrize("relative", ["from . import db", "from .db import transaction"])
def test_relative_imports_resolve(tmp_path: Path, relative: str) -> None:
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "__init__.py").write_text("")
    (tmp_path / "worker" / "db.py").write_text("")
    (tmp_path / "worker" / "x.py").write_text(relative + "\n")
    modules = {
        "worker": tmp_path / "worker/__init__.py",
        "worker.db": tmp_path / "worker/db.py",
        "worker.x": tmp_path / "worker/x.py",
    }
    assert import_graph(modules)["worker.x"] == {"worker.db"}


#: Rooms inside ``worker/``, lowest first: a module imports from its own room or a lower rank, never
#: from a higher rank or another room of the same rank. The top-level modules (settings, errors,
#: symbols) are rank 0; the package's ``__init__`` is the entry point (``celery -A worker`` finds the
#: app there) and sits above every room. Evaluation sits below the pipeline and trading because the
#: promotion gate and the paper report judge with the same backtest.
ROOM_RANK = {
    "store": 1,
    "embedded": 1,
    "pages": 1,
    "cluster": 1,
    "clients": 2,
    "evaluation": 3,
    "ingest": 3,
    "pipeline": 4,
    "trading": 4,
    "runtime": 5,
}


def _room(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    if parts[0] != "worker":
        return None
    if len(parts) == 1:
        return "worker", max(ROOM_RANK.values()) + 1
    room = parts[1] if parts[1] in ROOM_RANK else ""
    return room, ROOM_RANK.get(room, 0)


def room_violations(
    graph: dict[str, set[str]], room_of: Callable[[str], tuple[str, int] | None] = _room
) -> list[tuple[str, str]]:
    """Imports inside ``worker/`` (or the package ``room_of`` places) that run back up the rooms, or
    sideways between rooms of one rank."""
    bad = []
    for mod, deps in graph.items():
        src = room_of(mod)
        for dep in deps:
            dst = room_of(dep)
            if src is None or dst is None or src[0] == dst[0]:
                continue
            if dst[1] > src[1] or (dst[1] == src[1] and dst[1] > 0):
                bad.append((mod, dep))
    return sorted(bad)


def test_rooms_inside_worker_import_one_way() -> None:
    graph = import_graph(project_modules())
    rooms = {p.name for p in (ROOT / "worker").iterdir() if (p / "__init__.py").exists()}
    assert rooms == set(ROOM_RANK), "a new room needs a rank in ROOM_RANK"
    assert room_violations(graph) == []


def test_every_room_has_a_one_line_docstring_and_few_modules_stay_on_top() -> None:
    for room in ROOM_RANK:
        doc = ast.get_docstring(ast.parse((ROOT / "worker" / room / "__init__.py").read_text()))
        assert doc and "\n" not in doc.strip(), f"worker/{room}/__init__.py needs a one-line docstring"
    top = [p.name for p in (ROOT / "worker").glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= 6, top


def test_the_room_check_catches_an_arrow_back_up(tmp_path: Path) -> None:
    """The checker on a broken scratch tree: store -> pipeline (up) and pipeline -> trading (sideways)."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for room in ("store", "pipeline", "trading", "clients"):
        (tmp_path / "worker" / room).mkdir()
        (tmp_path / "worker" / room / "__init__.py").write_text("")
    (tmp_path / "worker" / "settings.py").write_text("")
    (tmp_path / "worker" / "store" / "db.py").write_text("def f():\n    from worker.pipeline import reduce\n")
    (tmp_path / "worker" / "pipeline" / "reduce.py").write_text(
        "from worker.store import db\nfrom worker.trading.paper import tick\nfrom worker.clients import llm\n"
    )
    (tmp_path / "worker" / "trading" / "paper.py").write_text("from worker import settings\n")
    (tmp_path / "worker" / "clients" / "llm.py").write_text("from worker.store.db import f\n")
    bad = room_violations(import_graph(project_modules(tmp_path)))
    assert bad == [
        ("worker.pipeline.reduce", "worker.trading.paper"),
        ("worker.store.db", "worker.pipeline.reduce"),
    ]


#: Rooms inside ``model/``, lowest first, under the same rule as ``worker/``'s. On top (rank 0):
#: the package's ``__init__`` (the actions HOLD/BUY/SELL) and what every room reads: ``candles``,
#: ``indicators``, ``features``. ``market`` (windows, defects, synthetic candles) and ``analyst``
#: (prompt, answer, rules, heuristic) know nothing of each other; ``learning`` trains from the
#: analysts' rules and the windows; ``trading`` runs a learned table and the rules at run time;
#: ``evaluation`` sits on top because it judges all of them side by side (its policy set holds the
#: ensemble, the heuristic's rules and the tables; the scoreboard trains each recipe per fold).
MODEL_ROOM_RANK = {
    "market": 1,
    "analyst": 1,
    "learning": 2,
    "trading": 3,
    "evaluation": 4,
}


def _model_room(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    if parts[0] != "model":
        return None
    if len(parts) == 1:
        return "model", 0
    room = parts[1] if parts[1] in MODEL_ROOM_RANK else ""
    return room, MODEL_ROOM_RANK.get(room, 0)


def test_rooms_inside_model_import_one_way() -> None:
    graph = import_graph(project_modules())
    rooms = {p.name for p in (ROOT / "model").iterdir() if (p / "__init__.py").exists()}
    assert rooms == set(MODEL_ROOM_RANK), "a new room needs a rank in MODEL_ROOM_RANK"
    assert room_violations(graph, _model_room) == []


def test_model_has_at_least_4_rooms_each_with_a_one_line_docstring_and_at_most_8_modules_on_top() -> None:
    rooms = [p for p in sorted((ROOT / "model").iterdir()) if (p / "__init__.py").exists()]
    assert len(rooms) >= 4, [p.name for p in rooms]
    for room in rooms:
        doc = ast.get_docstring(ast.parse((room / "__init__.py").read_text()))
        assert doc and "\n" not in doc.strip(), f"model/{room.name}/__init__.py needs a one-line docstring"
    top = [p.name for p in (ROOT / "model").glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= 8, top


def test_the_model_room_check_catches_an_arrow_back_up(tmp_path: Path) -> None:
    """The checker on a broken scratch tree: a top module and a room importing up, two rooms of one
    rank importing each other; a room reading the top and a lower room is fine."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for room in ("market", "analyst", "learning"):
        (tmp_path / "model" / room).mkdir()
        (tmp_path / "model" / room / "__init__.py").write_text("")
    (tmp_path / "model" / "features.py").write_text("def f():\n    from model.analyst import rules\n")
    (tmp_path / "model" / "analyst" / "rules.py").write_text(
        "from model import features\nfrom model.market import windows\n"
    )
    (tmp_path / "model" / "market" / "windows.py").write_text("from model.learning.training import t\n")
    (tmp_path / "model" / "learning" / "training.py").write_text(
        "from model.analyst.rules import r\nfrom model.market import windows\nfrom model import HOLD\n"
    )
    bad = room_violations(import_graph(project_modules(tmp_path)), _model_room)
    assert bad == [
        ("model.analyst.rules", "model.market.windows"),
        ("model.features", "model.analyst.rules"),
        ("model.market.windows", "model.learning.training"),
    ]


def test_no_module_of_the_cli_holds_sql() -> None:
    """The CLI parses, calls one function of ``worker/`` and prints: queries live in ``worker/store``."""
    import re

    sql = re.compile(r"\b(SELECT|INSERT INTO|UPDATE btc|DELETE FROM)\b|\.execute\(")
    found = [p.name for p in sorted((ROOT / "producer").rglob("*.py")) if sql.search(p.read_text())]
    assert found == []


#: The rooms that may run SQL: the store owns every table; the embedded servers set up their own.
SQL_ROOMS = ("worker/store", "worker/embedded")


def modules_running_sql(root: Path = ROOT) -> list[str]:
    """Modules of the three packages outside ``SQL_ROOMS`` that call ``.execute(`` (a query)."""
    rooms = [root / r for r in SQL_ROOMS]
    return [
        str(p.relative_to(root))
        for pkg in PACKAGES
        for p in sorted((root / pkg).rglob("*.py"))
        if not any(p.is_relative_to(r) for r in rooms) and ".execute(" in p.read_text()
    ]


def test_only_the_store_runs_sql() -> None:
    """Every query is a named function of the ``worker/store`` module that owns its table: the
    pipeline, the runtime, evaluation and trading call those, never a cursor."""
    assert modules_running_sql() == []


def test_the_sql_check_catches_a_query_outside_the_store(tmp_path: Path) -> None:
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
    for room in ("store", "embedded", "runtime"):
        (tmp_path / "worker" / room).mkdir()
    query = "def f(cur):\n    cur.execute('SELECT 1')\n"
    paths = ("worker/store/db.py", "worker/embedded/servers.py", "worker/runtime/reaper.py", "model/a.py")
    for path in paths:
        (tmp_path / path).write_text(query)
    assert modules_running_sql(tmp_path) == ["model/a.py", "worker/runtime/reaper.py"]
