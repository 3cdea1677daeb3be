-- Promotion of Q-table versions (issue 5): at most one promoted version per symbol, who/when, and a
-- log of every switch so that `qtrain models rollback` can go back to the previous one.
CREATE UNIQUE INDEX agent_state_one_promoted ON btc.agent_state (symbol) WHERE promoted;
ALTER TABLE btc.agent_state ADD COLUMN promoted_at timestamptz;
ALTER TABLE btc.agent_state ADD COLUMN promoted_by text;

CREATE TABLE btc.promotions (
    id               bigserial   PRIMARY KEY,
    symbol           text        NOT NULL,
    version          integer     NOT NULL,
    previous_version integer,               -- the version promoted just before (NULL: none)
    at               timestamptz NOT NULL DEFAULT now(),
    by               text        NOT NULL,  -- 'gate' for the automatic holdout gate, else a person
    kind             text        NOT NULL,  -- gate | manual | rollback
    details          jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX promotions_symbol ON btc.promotions (symbol, id);
CREATE INDEX backtests_symbol_version ON btc.backtests (symbol, version, kind);
