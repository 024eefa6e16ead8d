-- The operators' inbox (list_conversations): who answers each session and which operator
-- works it, as columns the inbox filters on without reading `data`.

-- mode repeats Session.mode (its serde name: REGULAR, OPERATOR or COPILOT) and assignee
-- Session.assignee (a uuid as text, NULL while nobody works it); every write of a session
-- row sets both. Older rows get them from `data`, where serde leaves assignee out when it
-- is None; only the rows that differ from the defaults are rewritten.
ALTER TABLE sessions ADD COLUMN mode TEXT NOT NULL DEFAULT 'REGULAR';
ALTER TABLE sessions ADD COLUMN assignee TEXT;
UPDATE sessions
SET mode = d.mode, assignee = d.assignee
FROM (SELECT id, coalesce(json_extract(data, '$.mode'), 'REGULAR') AS mode,
             json_extract(data, '$.assignee') AS assignee
      FROM sessions) AS d
WHERE d.id = sessions.id AND (d.mode <> 'REGULAR' OR d.assignee IS NOT NULL);

-- The inbox lists a tenant's conversations of one mode, newest first. Most sessions are
-- REGULAR and the inbox is about the others, so the index leaves REGULAR ones out (a query
-- must repeat the condition for SQLite to use it).
CREATE INDEX sessions_inbox ON sessions (tenant_id, mode, updated_at) WHERE mode <> 'REGULAR';
