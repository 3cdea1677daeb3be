"""``qtrain flower``: Flower, safe by default: on 127.0.0.1 unless told otherwise, and never without
credentials.

Flower answers everyone when its basic auth is unset or empty (``--basic-auth=":"`` passes), and
``celery -A worker flower`` listens on every interface. This wrapper refuses to start without a
user and a password for every entry of ``FLOWER_BASIC_AUTH`` (or ``--basic-auth``), binds to
loopback by default, hands the credentials to Flower through its environment (not its command
line, which ``ps`` shows), then becomes Flower (``exec``): signals reach it directly. Other
options go to Flower as given (``--persistent=True --db=...``). docker-compose.yml starts Flower
through it (``--address=0.0.0.0`` inside the container; the port is published on 127.0.0.1).
"""

from __future__ import annotations

import ipaddress
import os
import sys

import click

from worker.errors import BadInput

#: Flower options this command sets itself (given among the pass-through options, they would
#: silently win over its checks).
OWN_OPTIONS = ("--address", "--port", "--basic-auth", "--basic_auth", "--auth")
#: The placeholder of .env.example, refused like an empty password.
PLACEHOLDER = "change-me"


def check_credentials(value: str) -> list[str]:
    """The users of ``user:password[,user:password...]``; a one-line ``BadInput`` when it is empty,
    or an entry lacks a user or a password, or keeps .env.example's placeholder."""
    entries = [e.strip() for e in value.split(",")]
    how = "set FLOWER_BASIC_AUTH=user:password (or --basic-auth user:password)"
    if not value.strip():
        raise BadInput(f"Flower would be open to anyone: {how}; qtrain flower never starts without one")
    users = []
    for n, entry in enumerate(entries, 1):
        user, sep, password = entry.partition(":")
        if not sep or not user.strip() or not password.strip():
            raise BadInput(f"FLOWER_BASIC_AUTH entry {n} has an empty user or password: {how}")
        if PLACEHOLDER in password:
            raise BadInput(
                f"FLOWER_BASIC_AUTH entry {n} keeps the {PLACEHOLDER} placeholder: choose a password"
            )
        users.append(user.strip())
    return users


def _loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--address", default="127.0.0.1", show_default=True, help="Interface Flower listens on.")
@click.option("--port", default=5555, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--basic-auth",
    "basic_auth",
    envvar="FLOWER_BASIC_AUTH",
    default="",
    show_envvar=True,
    help="user:password[,user:password...]; required, neither part empty.",
)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(address: str, port: int, basic_auth: str, flower_args: tuple[str, ...]) -> None:
    """Start Flower with credentials required, on 127.0.0.1 by default; other options go to Flower."""
    users = check_credentials(basic_auth)
    own = [a.split("=", 1)[0] for a in flower_args if a.split("=", 1)[0] in OWN_OPTIONS]  # names, not values
    if own:
        raise BadInput(f"give {', '.join(own)} to qtrain flower itself (see `qtrain flower --help`)")
    where = f"{address}:{port}"
    reach = "this machine only" if _loopback(address) else "the network: keep the port behind a firewall"
    click.echo(
        f"qtrain flower: http://{where} for {', '.join(users)} ({reach}; /metrics and /healthcheck"
        " answer without credentials)",
        err=True,
    )
    os.environ["FLOWER_BASIC_AUTH"] = basic_auth  # to Flower by its environment, not argv
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker",
        "flower",
        f"--address={address}",
        f"--port={port}",
    ]
    os.execv(sys.executable, [*argv, *flower_args])


COMMANDS = [flower]
