-- The promotion gate's verdict on a version (issue 21): every bar it was held to (buy-and-hold, the
-- random-policy median, the promoted version, the unshaped twin when it is a bar), the value and
-- margin of each, which bar decided, and the LLM's margin over the same batch trained without its
-- analyses. NULL: gated before this migration, or not gated yet.
ALTER TABLE btc.agent_state ADD COLUMN gate jsonb;
