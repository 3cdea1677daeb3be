# qtrain image: the `qtrain` CLI, the Celery worker/reducer, beat and Flower (one image, many roles).
# Build: docker compose build   (or: docker build -t qtrain .)
# No secret is baked in: every password comes from the environment at run time (see .env.example).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    QTRAIN_MODELS_DIR=/data/models

# A fixed, unprivileged user. /data holds what the named volumes mount over (Q-table exports,
# Flower's state, beat's schedule); Docker seeds a new named volume with this ownership.
# Everything that does not depend on the code comes first: it stays cached across code changes,
# and few steps follow the large pip layer (each step copies the whole image on some storage
# drivers, e.g. vfs, which scripts/compose-check uses).
RUN groupadd --system --gid 10001 qtrain \
    && useradd --system --uid 10001 --gid qtrain --home-dir /home/qtrain --create-home qtrain \
    && mkdir -p /data/models \
    && chown -R qtrain:qtrain /data
WORKDIR /home/qtrain

# Dependencies come from the project's own metadata (pyproject.toml); every runtime dependency
# (numpy, psycopg2-binary, celery, flower, ccxt, ...) ships manylinux wheels, so no compiler.
COPY pyproject.toml README.md /tmp/qtrain-src/
COPY model /tmp/qtrain-src/model
COPY worker /tmp/qtrain-src/worker
COPY producer /tmp/qtrain-src/producer
RUN pip install /tmp/qtrain-src \
    && rm -rf /tmp/qtrain-src \
    && qtrain --version

USER qtrain
# The CLI is the default command; compose overrides it per role (celery -A worker worker|beat|flower).
CMD ["qtrain", "--help"]
