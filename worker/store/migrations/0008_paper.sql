-- Paper trading (issue 11): accounts, one position per account and symbol, one decision per
-- account, symbol and candle, the fills. PostgreSQL is the only state: a tick that runs twice for
-- a candle finds the decision row (unique) and writes nothing; a restarted worker resumes at
-- last_ts. qtrain never places a real order.
CREATE TABLE btc.paper_accounts (
    id          bigserial        PRIMARY KEY,
    name        text             NOT NULL UNIQUE,
    symbols     text[]           NOT NULL,
    timeframe   text             NOT NULL,
    exchange    text             NOT NULL,
    capital     double precision NOT NULL,       -- split equally over the symbols
    fee         double precision NOT NULL,       -- per side
    config      jsonb            NOT NULL,       -- weights, thresholds, min_confidence, depth...
    state       text             NOT NULL DEFAULT 'active',  -- active | stopped
    created_at  timestamptz      NOT NULL DEFAULT now(),
    stopped_at  timestamptz
);

CREATE TABLE btc.paper_positions (
    account_id  bigint           NOT NULL REFERENCES btc.paper_accounts(id) ON DELETE CASCADE,
    symbol      text             NOT NULL,
    capital     double precision NOT NULL,       -- this symbol's share of the account's capital
    anchor_ts   timestamptz      NOT NULL,       -- first candle of the feature history
    start_ts    timestamptz      NOT NULL,       -- first candle decided on
    last_ts     timestamptz,                     -- newest candle decided on (NULL: none yet)
    cash        double precision NOT NULL,
    qty         double precision NOT NULL DEFAULT 0,
    held        smallint         NOT NULL DEFAULT 0,  -- 1 long, 0 flat
    target      smallint         NOT NULL DEFAULT 0,  -- decided at last_ts, filled at the next open
    updated_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, symbol)
);

CREATE TABLE btc.paper_decisions (
    account_id  bigint           NOT NULL REFERENCES btc.paper_accounts(id) ON DELETE CASCADE,
    symbol      text             NOT NULL,
    ts          timestamptz      NOT NULL,       -- the candle decided at its close
    version     integer          NOT NULL,       -- the Q-table version that decided
    action      smallint         NOT NULL,
    confidence  double precision NOT NULL,
    score       double precision,                -- NULL: no component had data
    position    smallint         NOT NULL,       -- position when deciding (after this open's fill)
    target      smallint         NOT NULL,       -- position to take at the next open
    components  jsonb            NOT NULL,       -- component -> score
    weights     jsonb            NOT NULL,       -- component -> weight used (renormalised)
    missing     text[]           NOT NULL,
    notes       jsonb            NOT NULL DEFAULT '[]'::jsonb,
    close       double precision NOT NULL,
    cash        double precision NOT NULL,
    qty         double precision NOT NULL,
    equity      double precision NOT NULL,       -- marked at this candle's close
    source      text             NOT NULL,       -- live | catch-up
    decided_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, symbol, ts)
);

CREATE TABLE btc.paper_fills (
    id          bigserial        PRIMARY KEY,
    account_id  bigint           NOT NULL REFERENCES btc.paper_accounts(id) ON DELETE CASCADE,
    symbol      text             NOT NULL,
    ts          timestamptz      NOT NULL,       -- the candle at whose open the fill happened
    side        text             NOT NULL,       -- buy | sell
    price       double precision NOT NULL,
    qty         double precision NOT NULL,
    fee         double precision NOT NULL,
    version     integer,                         -- the version whose decision this fill executes
    UNIQUE (account_id, symbol, ts)
);
