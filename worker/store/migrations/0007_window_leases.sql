-- Self-healing batches (worker/reaper.py). A claimed window carries a lease: its worker must
-- finish or hand it back before lease_until, or the reaper re-enqueues it. `lost` counts the
-- times a window's worker vanished mid-task (lease expired while running, or the window was
-- claimed again while still running: a redelivery after a killed worker); at
-- QTRAIN_MAX_ATTEMPTS the window ends `failed` ("worker lost N times"). `attempts`, bumped by
-- every claim, is the fencing token: only the attempt that holds the claim may write the result.
ALTER TABLE btc.windows ADD COLUMN lease_until timestamptz;
ALTER TABLE btc.windows ADD COLUMN lost integer NOT NULL DEFAULT 0;
CREATE INDEX windows_lease ON btc.windows (lease_until) WHERE status IN ('pending', 'running');
