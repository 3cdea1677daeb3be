"""docker-compose.rabbitmq.yml: RabbitMQ as the broker, merged over docker-compose.yml (no engine)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.test_compose import COMPOSE, ENV_EXAMPLE, ROOT, _config

RABBITMQ_OVERRIDE = ROOT / "docker-compose.rabbitmq.yml"
CELERY_SERVICES = ("worker", "reducer", "flower", "beat", "cli")


def _env_with(tmp_path: Path, extra: str) -> Path:
    env_file = tmp_path / "env"
    env_file.write_text(ENV_EXAMPLE.read_text() + f"\n{extra}\n")
    return env_file


def test_the_override_points_every_celery_service_at_rabbitmq(tmp_path: Path) -> None:
    proc = _config(COMPOSE, RABBITMQ_OVERRIDE, env_file=_env_with(tmp_path, "RABBITMQ_PASSWORD=s3cret-mq"))
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    assert services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"] == "s3cret-mq"
    assert "consumer_timeout" in services["rabbitmq"]["environment"]["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
    for name in CELERY_SERVICES:
        env = services[name]["environment"]
        assert env["CELERY_BROKER_URL"] == "amqp://qtrain:s3cret-mq@rabbitmq:5672//", name
        assert env["CELERY_RESULT_BACKEND"].startswith("redis://"), name  # results stay on Redis
        assert services[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy", name
        assert "postgres" in services[name]["depends_on"], name  # merged, not replaced
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"]  # the base file's extra variables stay
    assert "QTRAIN_RETRAIN_CRON" in services["beat"]["environment"]


def test_the_override_refuses_a_missing_rabbitmq_password(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    lines = ENV_EXAMPLE.read_text().splitlines()
    env_file.write_text("\n".join(ln for ln in lines if not ln.startswith("RABBITMQ_PASSWORD=")) + "\n")
    proc = _config(COMPOSE, RABBITMQ_OVERRIDE, env_file=env_file)
    assert proc.returncode != 0 and "RABBITMQ_PASSWORD" in proc.stderr
