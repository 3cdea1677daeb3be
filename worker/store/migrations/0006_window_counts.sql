-- Per-(batch, symbol, status) window counts, maintained by statement-level triggers on btc.windows,
-- so that `qtrain status` reads a few dozen rows instead of aggregating every window of the batch
-- (issue 14: status instant whatever the batch size).
--
-- Rows are sharded by the writing session (shard = pg_backend_pid()): two live sessions never
-- update the same counter row, so workers finishing windows of the same symbol at once do not
-- queue on one hot row (and cannot deadlock on it). A status is the sum over shards; a shard's
-- own count may be negative (a window inserted by the producer and finished by a worker).
-- tokens / llm_ms: what the windows' analyses cost (prompt + completion tokens, Ollama total
-- duration), summed the same way, so that the status needs no join with ollama_analyses.
CREATE TABLE btc.window_counts (
    batch_id bigint           NOT NULL,
    symbol   text             NOT NULL,
    status   text             NOT NULL,
    shard    integer          NOT NULL,
    n        bigint           NOT NULL DEFAULT 0,
    tokens   bigint           NOT NULL DEFAULT 0,
    llm_ms   double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, symbol, status, shard)
);

-- One function for INSERT, UPDATE and DELETE: old rows count -1, new rows +1, grouped, one upsert
-- per statement (a bulk insert of 100,000 windows is one aggregate, not 100,000 row triggers).
CREATE FUNCTION btc.window_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO btc.window_counts AS c (batch_id, symbol, status, shard, n, tokens, llm_ms)
        SELECT w.batch_id, w.symbol, w.status, pg_backend_pid(), count(*),
               coalesce(sum(a.prompt_tokens + a.completion_tokens), 0), coalesce(sum(a.total_duration_ms), 0)
        FROM new_rows w LEFT JOIN btc.ollama_analyses a ON a.id = w.analysis_id
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (batch_id, symbol, status, shard) DO UPDATE
        SET n = c.n + excluded.n, tokens = c.tokens + excluded.tokens, llm_ms = c.llm_ms + excluded.llm_ms;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO btc.window_counts AS c (batch_id, symbol, status, shard, n, tokens, llm_ms)
        SELECT d.batch_id, d.symbol, d.status, pg_backend_pid(), sum(d.n), sum(d.tokens), sum(d.llm_ms)
        FROM (
            SELECT w.batch_id, w.symbol, w.status, 1 AS n,
                   coalesce(a.prompt_tokens + a.completion_tokens, 0) AS tokens,
                   coalesce(a.total_duration_ms, 0) AS llm_ms
            FROM new_rows w LEFT JOIN btc.ollama_analyses a ON a.id = w.analysis_id
            UNION ALL
            SELECT w.batch_id, w.symbol, w.status, -1,
                   -coalesce(a.prompt_tokens + a.completion_tokens, 0), -coalesce(a.total_duration_ms, 0)
            FROM old_rows w LEFT JOIN btc.ollama_analyses a ON a.id = w.analysis_id
        ) d
        GROUP BY 1, 2, 3
        HAVING sum(d.n) <> 0 OR sum(d.tokens) <> 0 OR sum(d.llm_ms) <> 0
        ORDER BY 1, 2, 3
        ON CONFLICT (batch_id, symbol, status, shard) DO UPDATE
        SET n = c.n + excluded.n, tokens = c.tokens + excluded.tokens, llm_ms = c.llm_ms + excluded.llm_ms;
    ELSE
        INSERT INTO btc.window_counts AS c (batch_id, symbol, status, shard, n, tokens, llm_ms)
        SELECT w.batch_id, w.symbol, w.status, pg_backend_pid(), -count(*),
               -coalesce(sum(a.prompt_tokens + a.completion_tokens), 0), -coalesce(sum(a.total_duration_ms), 0)
        FROM old_rows w LEFT JOIN btc.ollama_analyses a ON a.id = w.analysis_id
        -- windows deleted with their batch (cascade): its counters are deleted, not decremented
        WHERE EXISTS (SELECT 1 FROM btc.batches b WHERE b.id = w.batch_id)
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (batch_id, symbol, status, shard) DO UPDATE
        SET n = c.n + excluded.n, tokens = c.tokens + excluded.tokens, llm_ms = c.llm_ms + excluded.llm_ms;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER windows_count_insert AFTER INSERT ON btc.windows
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION btc.window_counts_apply();
CREATE TRIGGER windows_count_update AFTER UPDATE ON btc.windows
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION btc.window_counts_apply();
CREATE TRIGGER windows_count_delete AFTER DELETE ON btc.windows
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION btc.window_counts_apply();

CREATE FUNCTION btc.window_counts_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE btc.window_counts;
    RETURN NULL;
END
$$;
CREATE TRIGGER windows_count_truncate AFTER TRUNCATE ON btc.windows
    FOR EACH STATEMENT EXECUTE FUNCTION btc.window_counts_truncate();

-- A batch deleted (its windows go by cascade): its counters go too.
CREATE FUNCTION btc.window_counts_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM btc.window_counts c USING old_batches b WHERE c.batch_id = b.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER batches_forget_counts AFTER DELETE ON btc.batches
    REFERENCING OLD TABLE AS old_batches FOR EACH STATEMENT EXECUTE FUNCTION btc.window_counts_forget();

-- Windows written before this migration (shard 0: no live session has pid 0).
INSERT INTO btc.window_counts (batch_id, symbol, status, shard, n, tokens, llm_ms)
SELECT w.batch_id, w.symbol, w.status, 0, count(*),
       coalesce(sum(a.prompt_tokens + a.completion_tokens), 0), coalesce(sum(a.total_duration_ms), 0)
FROM btc.windows w LEFT JOIN btc.ollama_analyses a ON a.id = w.analysis_id
GROUP BY 1, 2, 3;

-- `qtrain status` also reads a batch's versions: by batch, not by (symbol, batch).
CREATE INDEX agent_state_batch ON btc.agent_state (batch_id);
