"""docker-compose.yml, .env.example and the Dockerfile: validated without a Docker engine.

``docker-compose config`` (Debian's docker-compose v1, which needs no engine) checks the file
against the compose schema and interpolates it with the placeholders of ``.env.example``. The
other checks parse the file: every ``qtrain`` command is a real CLI subcommand, every Celery
command names a real queue, every variable is documented and used, scaling and health rules
hold, and no secret is written down. Each checker is also run on a broken copy, so it can fail.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "docker-compose.gpu.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SOURCES = ("model", "worker", "producer")
#: ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}``, ``$VAR``; ``$$`` is a literal dollar.
VAR_RE = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|([A-Za-z_][A-Za-z0-9_]*))")
#: Names whose value must be a change-me placeholder (MAX_TOKENS is a count, not a token).
SECRET_KEY_RE = re.compile(r"PASSWORD|SECRET|(?<!MAX_)TOKEN|BASIC_AUTH|API_KEY", re.IGNORECASE)
URL_PASSWORD_RE = re.compile(r"://[^:/@\s]*:([^@\s]*)@")
HEALTH_PROBES = {"postgres": "pg_isready", "redis": "redis-cli", "ollama": "ollama list"}
ONE_SHOT = {"migrate", "ollama-pull"}
SCALED = ("worker", "reducer")
CELERY_SUBCOMMANDS = {"worker", "beat", "flower"}


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def load_compose(path: Path = COMPOSE) -> dict[str, Any]:
    """The compose file as YAML (anchors and ``<<`` merges resolved, variables not interpolated)."""
    return yaml.safe_load(path.read_text())


def env_example(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """``NAME=value`` lines of ``.env.example`` (comments and blanks skipped, quotes stripped)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f".env.example: not NAME=value: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[name.strip()] = value
    return out


def _argv(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    return [str(v) for v in value]


def service_argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: entrypoint + command (the image default when neither is set)."""
    return _argv(service.get("entrypoint")) + _argv(service.get("command"))


def strings(node: Any) -> list[str]:
    """Every string (keys and values) in a parsed YAML tree."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in [*strings(k), *strings(v)]]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


def variables_used(text: str) -> set[str]:
    """Names of the ``${VAR}`` / ``$VAR`` interpolations in compose text (comments excluded)."""
    body = "\n".join(
        line.split(" #", 1)[0] for line in text.splitlines() if not line.lstrip().startswith("#")
    )
    return {a or b for a, b in VAR_RE.findall(body)}


# ---------------------------------------------------------------------------------------------
# Checkers: each returns a list of problems (empty = fine), so the tests can show all at once
# and the mutation tests can check that a broken file is caught.
# ---------------------------------------------------------------------------------------------
_CTX = click.Context(click.Command("qtrain"))
"""A context for click's ``list_commands`` / ``get_command`` (the CLI's groups may load lazily)."""


def cli_paths() -> set[tuple[str, ...]]:
    """Every command path of the ``qtrain`` CLI, e.g. ``("db", "init")``, walked from click."""
    from producer.cli import cli

    paths: set[tuple[str, ...]] = set()

    def walk(cmd: click.Command, prefix: tuple[str, ...]) -> None:
        paths.add(prefix)
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(_CTX):
                sub = cmd.get_command(_CTX, name)
                if sub is not None:
                    walk(sub, (*prefix, name))

    walk(cli, ())
    return paths


def check_qtrain_commands(doc: dict[str, Any]) -> list[str]:
    """Each ``qtrain ...`` a service runs names an existing (sub)command, down to a leaf."""
    from producer.cli import cli

    problems = []
    for name, svc in doc["services"].items():
        argv = service_argv(svc)
        if not argv or argv[0] != "qtrain":
            continue
        cmd: click.Command = cli
        words = [w for w in argv[1:] if not w.startswith("-")]
        for word in words:
            if not isinstance(cmd, click.Group):
                break
            sub = cmd.get_command(_CTX, word)  # lazy groups load their commands on demand
            if sub is None:
                problems.append(f"{name}: `qtrain {' '.join(argv[1:])}`: no subcommand {word!r}")
                break
            cmd = sub
        else:
            if isinstance(cmd, click.Group) and cmd is not cli and "--help" not in argv:
                problems.append(f"{name}: `qtrain {' '.join(argv[1:])}` stops at a group")
        if cmd is cli and not words and "--help" not in argv and "--version" not in argv:
            problems.append(f"{name}: `qtrain` without a subcommand")
    return problems


def app_queues() -> set[str]:
    """Queue names the Celery app declares (``worker.runtime.app``)."""
    from worker.runtime.app import app

    return {q.name for q in app.conf.task_queues}


def _option(argv: list[str], *names: str) -> str | None:
    for i, word in enumerate(argv):
        for name in names:
            if word == name and i + 1 < len(argv):
                return argv[i + 1]
            if name.startswith("--") and word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


def celery_subcommand(argv: list[str]) -> str | None:
    """The subcommand of ``celery [-A APP] [-b URL] SUB ...`` (global options skipped)."""
    words = iter(argv[1:])
    for word in words:
        if word in ("-A", "--app", "-b", "--broker", "--result-backend", "--loader", "--config", "--workdir"):
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def check_celery_commands(doc: dict[str, Any], queues: set[str]) -> list[str]:
    """``celery -A worker ...``: a known subcommand, real queues, Flower's ``--port=`` form."""
    problems = []
    seen = set()
    for name, svc in doc["services"].items():
        argv = service_argv(svc)
        if argv[:2] == ["qtrain", "flower"]:  # execs `celery -A worker flower` once credentials hold
            argv = ["celery", "-A", "worker", "flower", *argv[2:]]
        elif argv[:1] == ["celery"] and celery_subcommand(argv) == "flower":
            problems.append(f"{name}: bare Flower: start it with `qtrain flower` (refuses empty credentials)")
        if not argv or argv[0] != "celery":
            continue
        if _option(argv, "-A", "--app") != "worker":
            problems.append(f"{name}: celery without `-A worker`")
        sub = celery_subcommand(argv)
        if sub not in CELERY_SUBCOMMANDS:
            problems.append(f"{name}: celery {sub}: not one of worker/beat/flower")
            continue
        seen.add(sub)
        if sub == "worker":
            q = _option(argv, "-Q", "--queues")
            if not q:
                problems.append(f"{name}: worker without -Q (it would consume the default queue only)")
            else:
                unknown = set(q.split(",")) - queues
                if unknown:
                    problems.append(
                        f"{name}: unknown queue(s) {sorted(unknown)}; the app has {sorted(queues)}"
                    )
            conc = _option(argv, "-c", "--concurrency")
            if conc is None and _option(argv, "--autoscale") is None:
                problems.append(f"{name}: worker without -c/--autoscale")
            if _option(argv, "--prefetch-multiplier") not in (None, "1"):
                problems.append(f"{name}: prefetch multiplier must stay 1 for long LLM calls")
        if sub == "flower":
            if "--port" in argv or not any(w.startswith("--port=") for w in argv):
                problems.append(f"{name}: Flower 2.2 needs `--port=5555` (with the `=`)")
            if not any(w.startswith("--db=") for w in argv) or "--persistent=True" not in argv:
                problems.append(f"{name}: Flower state must persist (--persistent=True --db=/data/...)")
        if sub == "beat" and not any(w.startswith("--schedule=") or w in ("-s", "--schedule") for w in argv):
            problems.append(f"{name}: beat needs --schedule on a volume")
    consumed = set()
    for svc in doc["services"].values():
        argv = service_argv(svc)
        if argv[:1] == ["celery"] and celery_subcommand(argv) == "worker":
            consumed |= set((_option(argv, "-Q", "--queues") or "").split(","))
    if queues - consumed:
        problems.append(f"no worker consumes queue(s) {sorted(queues - consumed)}")
    for sub in sorted(CELERY_SUBCOMMANDS - seen):
        problems.append(f"no service runs `celery -A worker {sub}`")
    return problems


def app_reads(name: str) -> bool:
    """Whether the Python sources mention the environment variable ``name`` as a string."""
    pattern = re.compile(rf"[\"']{re.escape(name)}[\"']")
    return any(pattern.search(p.read_text()) for d in SOURCES for p in (ROOT / d).rglob("*.py"))


def check_variables(text: str, documented: dict[str, str]) -> list[str]:
    """Every interpolated variable is in .env.example; every documented one is used somewhere."""
    used = variables_used(text)
    problems = [
        f"${{{v}}} is used but not documented in .env.example" for v in sorted(used - set(documented))
    ]
    for name in sorted(set(documented) - used):
        if not app_reads(name):
            problems.append(f".env.example documents {name}, which neither compose nor the app reads")
    return problems


def check_scaling(doc: dict[str, Any]) -> list[str]:
    """Scaled services (worker, reducer) have no container_name and publish no fixed host port."""
    problems = []
    for name, svc in doc["services"].items():
        if "container_name" in svc:
            problems.append(f"{name}: container_name blocks `--scale` (and clashes between projects)")
    for name in SCALED:
        svc = doc["services"].get(name)
        if svc is None:
            problems.append(f"no `{name}` service")
        elif svc.get("ports"):
            problems.append(f"{name}: a published port blocks `--scale {name}=N`")
    return problems


def check_health(doc: dict[str, Any]) -> list[str]:
    """postgres/redis/ollama have probes; depends_on waits on health or successful completion."""
    services = doc["services"]
    problems = []
    for name, probe in HEALTH_PROBES.items():
        test = services.get(name, {}).get("healthcheck", {}).get("test")
        if not test or probe not in " ".join(_argv(test)):
            problems.append(f"{name}: healthcheck must run `{probe}`")
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            problems.append(f"{name}: depends_on as a list waits for nothing; use conditions")
            continue
        for dep, spec in deps.items():
            cond = (spec or {}).get("condition")
            if dep not in services:
                problems.append(f"{name}: depends on unknown service {dep}")
            elif dep in ONE_SHOT and cond != "service_completed_successfully":
                problems.append(f"{name} -> {dep}: one-shot, needs service_completed_successfully")
            elif dep not in ONE_SHOT and "healthcheck" in services[dep] and cond != "service_healthy":
                problems.append(f"{name} -> {dep}: needs condition service_healthy")
            elif dep not in ONE_SHOT and "healthcheck" not in services[dep]:
                problems.append(f"{name} -> {dep}: {dep} has no healthcheck to wait on")
    for name in ONE_SHOT:
        if services.get(name, {}).get("restart", "no") != "no":
            problems.append(f"{name}: a one-shot must not restart")
    return problems


def check_no_secrets(doc: dict[str, Any]) -> list[str]:
    """Secret-looking keys and passwords inside URLs come from ``${...}``, never literals."""
    problems = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(k, str) and SECRET_KEY_RE.search(k) and isinstance(v, str | int | float):
                    if not str(v).startswith("${"):
                        problems.append(f"{where}.{k}: literal secret (use ${{{k}}})")
                walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")
            if node and all(isinstance(v, str) for v in node):  # an exec-form command line
                walk(" ".join(node), f"{where}[*]")
        elif isinstance(node, str):
            for pw in URL_PASSWORD_RE.findall(node):
                if pw and not pw.startswith("${"):
                    problems.append(f"{where}: literal password in URL {node!r}")
            for pw in re.findall(r"--requirepass\s+(\S+)", node) + re.findall(r"-a\s+(\S+)", node):
                if not re.fullmatch(r"\"?\$\$?\{?[A-Z_]+\}?\"?", pw):
                    problems.append(f"{where}: literal password on a command line: {node!r}")

    walk(doc, "compose")
    return problems


def check_dockerfile(text: str) -> list[str]:
    """Slim Python 3.11, non-root USER, ``pip install`` of the project itself, qtrain CMD, no secret."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    problems = []
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    if not froms or not re.match(r"FROM\s+python:3\.11[\w.-]*-slim", froms[-1], re.IGNORECASE):
        problems.append("the final stage must be FROM python:3.11-slim (or a 3.11.x-slim tag)")
    users = [ln.split(None, 1)[1] for ln in lines if ln.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the image must end on a non-root USER")
    joined = " ".join(text.split("\\\n"))
    installs = re.findall(r"pip install\s+([^&;\n]+)", joined)
    if not any(re.search(r"(^|\s)(\.|/\S+)(\s|$)", i) and "-r " not in i for i in installs):
        problems.append("dependencies must come from pyproject.toml: `pip install .` (or the copied tree)")
    if "requirements" in text:
        problems.append("no requirements file: pyproject.toml is the one source of dependencies")
    if "COPY pyproject.toml" not in text:
        problems.append("pyproject.toml must be copied into the build")
    cmds = [ln for ln in lines if ln.upper().startswith(("CMD ", "ENTRYPOINT "))]
    if not any("qtrain" in c for c in cmds):
        problems.append("CMD/ENTRYPOINT must run the qtrain entry point")
    for ln in lines:
        if ln.upper().startswith(("ENV ", "ARG ")) and SECRET_KEY_RE.search(ln):
            problems.append(f"secret baked into the image: {ln!r}")
        if ln.upper().startswith(("COPY ", "ADD ")) and re.search(r"(^|\s)\.env\b|\s\.\s", ln + " "):
            problems.append(f"copies .env or the whole context: {ln!r}")
    return problems


COMPOSE_CHECK = ROOT / "scripts" / "compose-check"
STANDINS = ROOT / "docker" / "standins"


def standin_tags(script: str) -> set[str]:
    """Image tags ``scripts/compose-check`` builds as stand-ins: ``STANDINS=(...)`` and ollama's."""
    m = re.search(r"^STANDINS=\(([^)]*)\)", script, re.MULTILINE)
    tags = set(m.group(1).split()) if m else set()
    tags |= set(re.findall(r"build\s+\"(ollama/ollama:[\w.-]+)\"", script))
    return tags


def check_standins(services: dict[str, Any], script: str) -> list[str]:
    """Every image the (interpolated) compose file runs is built by compose-check: a stand-in for the
    registry images, the project's Dockerfile for the ones with ``build``; each stand-in dir exists."""
    problems = []
    tags = standin_tags(script)
    for name, svc in services.items():
        image = str(svc.get("image", ""))
        if "build" not in svc and image not in tags:
            problems.append(f"{name}: image {image!r} has no stand-in built by scripts/compose-check")
    for tag in sorted(tags):
        d = tag.split(":")[0].split("/")[-1]
        if not (STANDINS / d / "Dockerfile").is_file():
            problems.append(f"{tag}: docker/standins/{d}/Dockerfile is missing")
    return problems


# ---------------------------------------------------------------------------------------------
# Tests of the real files
# ---------------------------------------------------------------------------------------------
def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        msg = "docker-compose not installed: apt-get install -y --no-install-recommends docker-compose"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def _config(*files: Path, env_file: Path) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f FILES --env-file ENV_FILE config``; variables come from ENV_FILE only."""
    args = [_docker_compose()]
    for f in files:
        args += ["-f", str(f)]
    # Neither this process's environment nor a developer's .env may leak into the check.
    clean = {k: v for k, v in os.environ.items() if k not in env_example() and not k.startswith("COMPOSE_")}
    return subprocess.run(
        [*args, "--project-directory", str(ROOT), "--env-file", str(env_file), "config"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
    )


def test_docker_compose_config_accepts_the_file_with_env_example() -> None:
    proc = _config(COMPOSE, env_file=ENV_EXAMPLE)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    ex = env_example()
    for name in ("worker", "reducer", "flower", "beat", "migrate"):
        env = cfg["services"][name]["environment"]
        for key in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
            assert f":{ex['REDIS_PASSWORD']}@redis:6379/" in env[key], (name, key)
        assert f":{ex['POSTGRES_PASSWORD']}@postgres:5432/" in env["DATABASE_URL"], name
    assert cfg["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"] == ex["FLOWER_BASIC_AUTH"]
    assert cfg["services"]["ollama-pull"]["entrypoint"] == ["ollama", "pull", ex["OLLAMA_MODEL"]]
    assert str(ex["WORKER_CONCURRENCY"]) in cfg["services"]["worker"]["command"]


def test_interpolated_environments_are_accepted_by_the_app(tmp_path: Path) -> None:
    """The values compose hands the containers parse with the app's own readers."""
    from celery.schedules import crontab

    from worker.pipeline.promotion import PromotionConfig
    from worker.pipeline.schedule import RetrainConfig, beat_schedule
    from worker.settings import Settings

    proc = _config(COMPOSE, env_file=ENV_EXAMPLE)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    for name in ("worker", "reducer", "beat", "flower", "migrate", "cli"):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        settings = Settings.from_env(env)
        assert settings.ollama_hosts == ("http://ollama:11434",)
        assert settings.broker_url.startswith("redis://:") and settings.models_dir == "/data/models"
        PromotionConfig.from_env(env)
    beat_env = {k: str(v) for k, v in services["beat"]["environment"].items()}
    config = RetrainConfig.from_env(beat_env)
    assert config is not None and config.symbols == ("BTC-USDT", "ETH-USDT") and config.model is None
    (entry,) = beat_schedule(config).values()
    assert isinstance(entry["schedule"], crontab) and entry["options"]["queue"] == "reduce"
    # Without a schedule in .env, beat runs idle instead of failing.
    env_file = tmp_path / "env"
    env_file.write_text(ENV_EXAMPLE.read_text().replace('QTRAIN_RETRAIN_CRON="15 */6 * * *"', ""))
    proc = _config(COMPOSE, env_file=env_file)
    assert proc.returncode == 0, proc.stderr
    beat_env = {k: str(v) for k, v in yaml.safe_load(proc.stdout)["services"]["beat"]["environment"].items()}
    assert RetrainConfig.from_env(beat_env) is None


def test_docker_compose_config_accepts_the_gpu_override() -> None:
    proc = _config(COMPOSE, GPU_OVERRIDE, env_file=ENV_EXAMPLE)
    assert proc.returncode == 0, proc.stderr
    ollama = yaml.safe_load(proc.stdout)["services"]["ollama"]
    (device,) = ollama["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    assert "deploy" not in load_compose()["services"]["ollama"]  # the GPU stays opt-in


@pytest.mark.parametrize("missing", ["POSTGRES_PASSWORD", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH"])
def test_docker_compose_config_refuses_a_missing_secret(missing: str, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    lines = ENV_EXAMPLE.read_text().splitlines()
    env_file.write_text("\n".join(ln for ln in lines if not ln.startswith(f"{missing}=")) + "\n")
    proc = _config(COMPOSE, env_file=env_file)
    assert proc.returncode != 0
    assert missing in proc.stderr


def test_qtrain_commands_exist_in_the_cli() -> None:
    doc = load_compose()
    assert check_qtrain_commands(doc) == []
    assert service_argv(doc["services"]["migrate"]) == ["qtrain", "db", "init"]


def test_flower_starts_through_the_guard_with_required_credentials() -> None:
    flower = load_compose()["services"]["flower"]
    argv = service_argv(flower)
    assert argv[:2] == ["qtrain", "flower"] and "--address=0.0.0.0" in argv  # inside the container only
    assert flower["ports"] == ["${FLOWER_BIND:-127.0.0.1}:${FLOWER_PORT:-5555}:5555"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert not any(w.startswith(("--basic-auth", "--basic_auth")) for w in argv)  # not on the command line


def test_celery_commands_use_real_queues_and_flower_port_form() -> None:
    queues = app_queues()
    assert queues == {"analyze", "reduce"}
    assert check_celery_commands(load_compose(), queues) == []
    services = load_compose()["services"]
    assert _option(service_argv(services["worker"]), "-Q") == "analyze"
    assert _option(service_argv(services["reducer"]), "-Q") == "reduce"


def test_every_variable_is_documented_and_used() -> None:
    text = COMPOSE.read_text() + GPU_OVERRIDE.read_text()
    assert check_variables(text, env_example()) == []


def test_env_example_commits_no_real_secret() -> None:
    ex = env_example()
    for name, value in ex.items():
        if SECRET_KEY_RE.search(name):
            assert "change-me" in value, f"{name} must be a change-me placeholder"
        for pw in URL_PASSWORD_RE.findall(value):
            assert pw.startswith("change-me"), f"{name}: URL password must be a placeholder"
    # Every QTRAIN_* setting the code names (read through worker/settings.py, some by prefix) is
    # documented, except the script switch and the tests' exchange override.
    for name in sorted(code_settings() - set(NOT_IN_ENV_EXAMPLE)):
        assert name in ex, f"{name} (named in the code) is missing from .env.example"


NOT_IN_ENV_EXAMPLE = {
    "QTRAIN_EMBEDDED": "a switch of scripts/demo and scripts/test (README), not of the app",
    "QTRAIN_EMBEDDED_LLM": "a switch of scripts/demo and python -m worker.embedded (README), not of the app",
    "QTRAIN_LLM_GGUF": "the embedded model's file, read by python -m worker.embedded only (README)",
    "QTRAIN_EXCHANGE_API_URL": "a hidden override pointing ccxt at the tests' fake exchange",
}


def code_settings() -> set[str]:
    """Every complete ``QTRAIN_*`` name quoted or backquoted in worker/ and producer/ sources."""
    pattern = re.compile(r"[\"'`](QTRAIN_[A-Z0-9_]*[A-Z0-9])[\"'`]")
    return {
        m
        for d in ("worker", "producer")
        for p in (ROOT / d).rglob("*.py")
        for m in pattern.findall(p.read_text())
    }


def test_code_settings_finds_the_prefix_read_ones() -> None:
    names = code_settings()
    assert {"QTRAIN_WEIGHTS", "QTRAIN_PAPER_EVERY_S", "QTRAIN_RETRAIN_CRON", "QTRAIN_LEASE_S"} <= names


def test_scaled_services_can_scale() -> None:
    assert check_scaling(load_compose()) == []


def test_healthchecks_and_depends_on_conditions() -> None:
    doc = load_compose()
    assert check_health(doc) == []
    deps = doc["services"]["worker"]["depends_on"]
    assert {"postgres", "redis", "migrate", "ollama-pull"} <= set(deps)


def test_no_literal_secret_in_compose() -> None:
    assert check_no_secrets(load_compose()) == []
    assert check_no_secrets(load_compose(GPU_OVERRIDE)) == []


def test_volumes_hold_the_state() -> None:
    services = load_compose()["services"]
    mounts = {name: " ".join(str(v) for v in svc.get("volumes", [])) for name, svc in services.items()}
    assert "/var/lib/postgresql/data" in mounts["postgres"]
    assert "/root/.ollama" in mounts["ollama"]
    flower_db = _option(service_argv(services["flower"]), "--db")
    beat_file = _option(service_argv(services["beat"]), "--schedule")
    for name, path in (("flower", flower_db), ("beat", beat_file)):
        assert path is not None
        targets = [str(v).split(":")[1] for v in services[name].get("volumes", [])]
        assert any(path.startswith(t.rstrip("/") + "/") for t in targets), f"{name}: {path} not on a volume"


def test_dockerfile_and_dockerignore() -> None:
    assert check_dockerfile(DOCKERFILE.read_text()) == []
    ignored = set(DOCKERIGNORE.read_text().split())
    assert {".env", ".git", ".venv", "models"} <= ignored
    text = DOCKERFILE.read_text()
    for package in SOURCES:  # everything pyproject's package discovery includes is copied
        assert f"COPY {package} " in text


def test_compose_check_builds_every_image_the_compose_file_runs() -> None:
    """scripts/compose-check runs the compose file for real; it needs a stand-in for each image."""
    proc = _config(COMPOSE, env_file=ENV_EXAMPLE)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    script = COMPOSE_CHECK.read_text()
    assert check_standins(services, script) == []
    assert {"postgres:16-bookworm", "redis:7-bookworm", "python:3.11-slim"} <= standin_tags(script)
    # The project's image is built FROM the python stand-in's tag.
    assert re.search(r"^FROM python:3\.11-slim\s*$", DOCKERFILE.read_text(), re.MULTILINE)
    bash = shutil.which("bash")
    assert bash is not None
    syntax = subprocess.run([bash, "-n", str(COMPOSE_CHECK)], capture_output=True, text=True, timeout=30)
    assert syntax.returncode == 0, syntax.stderr


def test_standin_checker_catches_an_image_without_stand_in() -> None:
    services = {"db": {"image": "mysql:8"}, "app": {"image": "qtrain:latest", "build": "."}}
    problems = check_standins(services, COMPOSE_CHECK.read_text())
    assert problems == ["db: image 'mysql:8' has no stand-in built by scripts/compose-check"]
    script = COMPOSE_CHECK.read_text().replace("STANDINS=(", "STANDINS=(nosuchdir:1 ", 1)
    assert check_standins({}, script) == ["nosuchdir:1: docker/standins/nosuchdir/Dockerfile is missing"]


# ---------------------------------------------------------------------------------------------
# The checkers catch broken files (so the tests above can fail)
# ---------------------------------------------------------------------------------------------
def _broken(mutate: Any) -> dict[str, Any]:
    doc = copy.deepcopy(load_compose())
    mutate(doc["services"])
    return doc


@pytest.mark.parametrize(
    ("checker", "mutate", "expect"),
    [
        (
            check_qtrain_commands,
            lambda s: s["migrate"].update(command=["qtrain", "db", "upgrade"]),
            "upgrade",
        ),
        (check_qtrain_commands, lambda s: s["migrate"].update(command=["qtrain", "db"]), "group"),
        (check_scaling, lambda s: s["worker"].update(container_name="qtrain-worker"), "container_name"),
        (check_scaling, lambda s: s["worker"].update(ports=["8000:8000"]), "--scale worker"),
        (check_health, lambda s: s["redis"].pop("healthcheck"), "redis: healthcheck"),
        (check_health, lambda s: s["worker"].update(depends_on=["postgres"]), "list"),
        (
            check_health,
            lambda s: s["worker"]["depends_on"].update(migrate={"condition": "service_started"}),
            "one-shot",
        ),
        (
            check_no_secrets,
            lambda s: s["worker"]["environment"].update(CELERY_BROKER_URL="redis://:hunter2@redis:6379/0"),
            "literal password",
        ),
        (check_no_secrets, lambda s: s["postgres"]["environment"].update(POSTGRES_PASSWORD="x"), "literal"),
        (
            check_no_secrets,
            lambda s: s["redis"].update(command=["redis-server", "--requirepass", "hunter2"]),
            "command line",
        ),
    ],
)
def test_checkers_catch_broken_compose(checker: Any, mutate: Any, expect: str) -> None:
    problems = checker(_broken(mutate))
    assert any(expect in p for p in problems), problems


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["celery", "-A", "worker", "worker", "-Q", "analyse", "-c", "2"], "unknown queue"),
        (["celery", "-A", "worker", "worker", "-c", "2"], "without -Q"),
        (
            ["celery", "-A", "worker", "flower", "--port", "5555", "--persistent=True", "--db=/d/f"],
            "--port=5555",
        ),
        (["celery", "-A", "qtrain", "beat", "--schedule=/data/s"], "-A worker"),
        (
            ["celery", "-A", "worker", "flower", "--port=5555", "--persistent=True", "--db=/d/f"],
            "bare Flower",
        ),
    ],
)
def test_celery_checker_catches_broken_commands(argv: list[str], expect: str) -> None:
    doc = load_compose()
    doc["services"]["broken"] = {"command": argv}
    problems = check_celery_commands(doc, app_queues())
    assert any(expect in p for p in problems), problems


def test_variable_checker_catches_undocumented_and_unused() -> None:
    text = COMPOSE.read_text() + "\n  x: ${QTRAIN_NOT_DOCUMENTED:-1}\n"
    documented = {**env_example(), "QTRAIN_NEVER_READ": "1"}
    problems = check_variables(text, documented)
    assert any("QTRAIN_NOT_DOCUMENTED" in p for p in problems), problems
    assert any("QTRAIN_NEVER_READ" in p for p in problems), problems
    assert variables_used("a: $$HOME ${A:?m} $B ${C:-x} # ${D}") == {"A", "B", "C"}


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        ("USER qtrain", "USER root", "non-root"),
        ("FROM python:3.11-slim", "FROM python:3.11", "python:3.11-slim"),
        ("pip install /tmp/qtrain-src", "pip install -r requirements.txt", "pyproject"),
        ('CMD ["qtrain", "--help"]', 'CMD ["python"]', "qtrain entry point"),
        ("ENV PYTHONDONTWRITEBYTECODE=1", "ENV POSTGRES_PASSWORD=x PYTHONDONTWRITEBYTECODE=1", "secret"),
    ],
)
def test_dockerfile_checker_catches_broken_files(old: str, new: str, expect: str) -> None:
    text = DOCKERFILE.read_text()
    assert old in text
    problems = check_dockerfile(text.replace(old, new))
    assert any(expect in p for p in problems), problems


@pytest.mark.slow
def test_the_files_the_dockerfile_copies_build_a_complete_wheel(tmp_path: Path) -> None:
    """``pip install`` of exactly what the Dockerfile copies ships the migrations and ``qtrain``.

    Slow and needs the package index (pip fetches the build backend, as ``docker build`` does).
    """
    import sys
    import zipfile

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                path = ROOT / src
                if path.is_dir():
                    shutil.copytree(path, ctx / src, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(path, ctx / src)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(ctx)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("qtrain-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n for n in names if n.startswith("worker/store/migrations/") and n.endswith(".sql")}
    sql_files = (ROOT / "worker" / "store" / "migrations").glob("*.sql")
    assert shipped == {f"worker/store/migrations/{p.name}" for p in sql_files}
    for package in SOURCES:
        assert f"{package}/__init__.py" in names
    (ep,) = [n for n in names if n.endswith("entry_points.txt")]
    assert "qtrain = producer.cli:main" in zipfile.ZipFile(wheel).read(ep).decode()
