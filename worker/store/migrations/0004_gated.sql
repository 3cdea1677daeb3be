-- A version is gated once the promotion gate has run on it (promoted or not) or its failure was
-- recorded. A batch is `done` only when each of its versions is gated, so `qtrain train --wait`
-- never returns before `models/` and the gate's record are written (issue 9).
ALTER TABLE btc.agent_state ADD COLUMN gated_at timestamptz;
UPDATE btc.agent_state a SET gated_at = a.created_at
 WHERE EXISTS (SELECT 1 FROM btc.backtests t WHERE t.symbol = a.symbol AND t.version = a.version
               AND t.kind = 'holdout')
    OR EXISTS (SELECT 1 FROM btc.promotions p WHERE p.symbol = a.symbol AND p.version = a.version
               AND p.kind = 'gate_failed');
