-- The operators' inbox (list_conversations): who answers each session and which operator
-- works it, as columns the inbox filters on without reading `data`.

-- mode repeats Session.mode (its serde name: REGULAR, OPERATOR or COPILOT) and assignee
-- Session.assignee (NULL while nobody works it); every write of a session row sets both.
-- Older rows get them from `data`, where serde leaves assignee out when it is None; only
-- the rows that differ from the defaults are rewritten.
ALTER TABLE sessions ADD COLUMN mode text NOT NULL DEFAULT 'REGULAR';
ALTER TABLE sessions ADD COLUMN assignee uuid;
UPDATE sessions
SET mode = d.mode, assignee = d.assignee
FROM (SELECT id, coalesce(data::json ->> 'mode', 'REGULAR') AS mode,
             (data::json ->> 'assignee')::uuid AS assignee
      FROM sessions) AS d
WHERE d.id = sessions.id AND (d.mode <> 'REGULAR' OR d.assignee IS NOT NULL);

-- The inbox lists a tenant's conversations of one mode, newest first. Most sessions are
-- REGULAR and the inbox is about the others, so the index leaves REGULAR ones out (a
-- query states the condition so that generic plans, which do not know the mode bound,
-- can use it).
CREATE INDEX sessions_inbox ON sessions (tenant_id, mode, updated_at) WHERE mode <> 'REGULAR';
