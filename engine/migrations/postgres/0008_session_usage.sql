-- Session limits and billing: when each session closed, indexes to find a tenant's or an
-- agent's sessions by start, and the counters reserve_session counts sessions with.

-- closed_at repeats Session.closed_at (bigint unix nanoseconds, like created_at); every
-- write of a session row sets it. Older rows get it from `data`, where serde wrote it as
-- RFC 3339 in UTC with 0 to 9 fraction digits: whole seconds through timestamptz, the
-- fraction as digits (timestamptz would round it to microseconds).
ALTER TABLE sessions ADD COLUMN closed_at bigint;
UPDATE sessions
SET closed_at = extract(epoch FROM (left(d.c, 19) || 'Z')::timestamptz)::bigint * 1000000000
    + rpad(coalesce(substring(d.c FROM '\.([0-9]+)Z$'), ''), 9, '0')::bigint
FROM (SELECT id, data::json ->> 'closed_at' AS c FROM sessions) AS d
WHERE d.id = sessions.id AND d.c IS NOT NULL;

CREATE INDEX sessions_tenant ON sessions (tenant_id, created_at);
DROP INDEX sessions_agent;
CREATE INDEX sessions_agent ON sessions (agent_id, created_at);

-- One counter per scope ('tenant:<uuid>' or 'agent:<uuid>') and period [period_start,
-- period_end).
CREATE TABLE session_usage_counters (
    scope        text NOT NULL,
    period_start bigint NOT NULL,
    period_end   bigint NOT NULL,
    count        bigint NOT NULL,
    PRIMARY KEY (scope, period_start, period_end)
);
