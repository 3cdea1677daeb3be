-- qtrain schema v1: every table of DESIGN.md. Never edit an applied migration: add 0002_*.sql.
CREATE SCHEMA IF NOT EXISTS btc;

-- Prices and volumes are double precision: every computation is float64 numpy, exchange
-- decimals (<= 8 places, < 1e9) round-trip through float64's 15-17 significant digits, and
-- COPY/fetch of float8 is several times faster than numeric for 10^5..10^6 rows.
CREATE TABLE btc.candles (
    symbol           text             NOT NULL,
    timeframe        text             NOT NULL,
    ts               timestamptz      NOT NULL,
    open             double precision NOT NULL,
    high             double precision NOT NULL,
    low              double precision NOT NULL,
    close            double precision NOT NULL,
    volume           double precision NOT NULL,
    quote_volume     double precision,
    trades           bigint,
    taker_buy_volume double precision,
    flag             text,  -- e.g. 'outlier_range': kept, flagged by the importer
    PRIMARY KEY (symbol, timeframe, ts),
    CHECK (high >= low)
);

CREATE TABLE btc.batches (
    id             bigserial PRIMARY KEY,
    created_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    state          text        NOT NULL DEFAULT 'running',  -- running | done | failed
    symbols        text[]      NOT NULL,
    timeframe      text        NOT NULL,
    window_size    integer     NOT NULL,
    stride         integer     NOT NULL,
    since          timestamptz,
    until          timestamptz,
    epochs         integer     NOT NULL,
    model          text        NOT NULL,
    analyst        text        NOT NULL,  -- ollama | heuristic
    prompt_version integer     NOT NULL,
    seed           bigint      NOT NULL,
    params         jsonb       NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE btc.ollama_analyses (
    id                bigserial PRIMARY KEY,
    cache_key         text        NOT NULL UNIQUE,  -- sha256(content_hash, model, prompt_version)
    content_hash      text        NOT NULL,
    symbol            text        NOT NULL,
    timeframe         text        NOT NULL,
    start_ts          timestamptz NOT NULL,
    end_ts            timestamptz NOT NULL,
    model             text        NOT NULL,
    prompt_version    integer     NOT NULL,
    analyst           text        NOT NULL,
    regime            text,
    action            smallint,
    confidence        double precision,
    summary           text,
    raw_text          text,
    repairs           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    prompt_tokens     integer,
    completion_tokens integer,
    total_duration_ms double precision,
    eval_duration_ms  double precision,
    host              text,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE btc.ollama_trading_rules (
    id          bigserial PRIMARY KEY,
    analysis_id bigint   NOT NULL REFERENCES btc.ollama_analyses(id) ON DELETE CASCADE,
    idx         integer  NOT NULL,
    conditions  jsonb    NOT NULL,
    action      smallint NOT NULL,
    confidence  double precision NOT NULL,
    rationale   text,
    UNIQUE (analysis_id, idx)
);

CREATE TABLE btc.windows (
    batch_id     bigint      NOT NULL REFERENCES btc.batches(id) ON DELETE CASCADE,
    symbol       text        NOT NULL,
    idx          integer     NOT NULL,
    start_ts     timestamptz NOT NULL,
    end_ts       timestamptz NOT NULL,
    content_hash text        NOT NULL,
    status       text        NOT NULL DEFAULT 'pending',  -- pending|running|done|cached|failed
    attempts     integer     NOT NULL DEFAULT 0,
    error        text,
    analysis_id  bigint REFERENCES btc.ollama_analyses(id),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, symbol, idx)
);
CREATE INDEX windows_status ON btc.windows (batch_id, symbol, status);

CREATE TABLE btc.agent_state (
    id         bigserial PRIMARY KEY,
    symbol     text        NOT NULL,
    version    integer     NOT NULL,
    batch_id   bigint REFERENCES btc.batches(id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    npz        bytea       NOT NULL,   -- the Q-table file, loaded with allow_pickle=False
    sha256     text        NOT NULL,
    metadata   jsonb       NOT NULL,
    promoted   boolean     NOT NULL DEFAULT false,
    UNIQUE (symbol, version),
    UNIQUE (symbol, batch_id)
);

CREATE TABLE btc.backtests (
    id         bigserial PRIMARY KEY,
    symbol     text        NOT NULL,
    version    integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    since      timestamptz,
    until      timestamptz,
    policy     text        NOT NULL,
    kind       text        NOT NULL DEFAULT 'manual',  -- manual | holdout | walk_forward
    params     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    metrics    jsonb       NOT NULL
);
