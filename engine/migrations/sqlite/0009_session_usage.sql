-- Session limits and billing: when each session closed, indexes to find a tenant's or an
-- agent's sessions by start, and the counters reserve_session counts sessions with.

-- closed_at repeats Session.closed_at (RFC 3339 text with nine fraction digits, like
-- created_at); every write of a session row sets it. Older rows get it from `data`, where
-- serde wrote it with 0, 3, 6 or 9 fraction digits: padded to nine, so all rows agree.
ALTER TABLE sessions ADD COLUMN closed_at TEXT;
UPDATE sessions
SET closed_at = substr(d.c, 1, 19) || '.'
    || substr(iif(substr(d.c, 20, 1) = '.', substr(d.c, 21, length(d.c) - 21), '')
              || '000000000', 1, 9)
    || 'Z'
FROM (SELECT id, json_extract(data, '$.closed_at') AS c FROM sessions) AS d
WHERE d.id = sessions.id AND d.c IS NOT NULL;

CREATE INDEX sessions_tenant ON sessions (tenant_id, created_at);
DROP INDEX sessions_agent;
CREATE INDEX sessions_agent ON sessions (agent_id, created_at);

-- One counter per scope ('tenant:<uuid>' or 'agent:<uuid>') and period [period_start,
-- period_end).
CREATE TABLE session_usage_counters (
    scope        TEXT NOT NULL,
    period_start TEXT NOT NULL,
    period_end   TEXT NOT NULL,
    count        INTEGER NOT NULL,
    PRIMARY KEY (scope, period_start, period_end)
);
