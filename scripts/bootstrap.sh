# Sourced by scripts/test and scripts/demo: a virtual environment with qtrain installed, and
# PostgreSQL + Redis reachable (else: how to start them, and exit 1).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${QTRAIN_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.qtrain-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "==> installing qtrain and its dev dependencies"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' || true
  "$VENV/bin/python" -c "import model, worker, producer, celery, talib" || { echo "install failed" >&2; exit 1; }
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"

check_port() {  # name host port start-command
  if ! "$VENV/bin/python" - "$2" "$3" <<'PY' 2>/dev/null
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
PY
  then
    echo "$1 is not reachable on $2:$3. Start it with:" >&2
    echo "    $4" >&2
    exit 1
  fi
}
check_port PostgreSQL 127.0.0.1 5432 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start'
check_port Redis 127.0.0.1 6379 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log'
