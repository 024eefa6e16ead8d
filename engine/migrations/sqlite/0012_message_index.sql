-- Messages are kept in commit order and are never moved. A group commit appends its rows
-- at the end of `messages`, which has no index on its hot path, so a commit writes a few
-- pages at the table's end. Finding a session's messages goes through `message_index`,
-- which the store fills in bulk, sorted by session, about once a second: then each
-- session's index page is written once for all its new messages, and only small
-- (session, id, seq) entries move, never the rows themselves. Rows above the watermark
-- are not indexed yet; the store finds those through what it keeps in memory (see
-- engine/src/store/sqlite/message_log.rs).
CREATE TABLE message_rows (
    seq             INTEGER PRIMARY KEY,
    session_id      TEXT NOT NULL,
    id              INTEGER NOT NULL,
    role            TEXT NOT NULL,
    text            TEXT NOT NULL,
    ts              TEXT NOT NULL,
    attachments     TEXT,
    metadata        TEXT,
    feedback        TEXT NOT NULL,
    idempotency_key TEXT
);

INSERT INTO message_rows (session_id, id, role, text, ts, attachments, metadata, feedback,
                          idempotency_key)
    SELECT session_id, id, role, text, ts, attachments, metadata, feedback, idempotency_key
    FROM messages ORDER BY session_id, id;
INSERT INTO message_rows (session_id, id, role, text, ts, attachments, metadata, feedback,
                          idempotency_key)
    SELECT session_id, id, role, text, ts, attachments, metadata, feedback, idempotency_key
    FROM message_log ORDER BY seq;

CREATE TABLE message_index (
    session_id TEXT NOT NULL,
    id         INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    PRIMARY KEY (session_id, id)
) WITHOUT ROWID;

INSERT INTO message_index (session_id, id, seq)
    SELECT session_id, id, seq FROM message_rows ORDER BY session_id, id;

-- Every row up to the watermark is in message_index.
CREATE TABLE message_fold (watermark INTEGER NOT NULL);
INSERT INTO message_fold (watermark) SELECT COALESCE(MAX(seq), 0) FROM message_rows;

DROP TABLE message_log;
DROP TABLE messages;
ALTER TABLE message_rows RENAME TO messages;

-- Few messages carry a key, so the partial index costs the hot path nothing; it answers
-- a repeated key whether or not the message is indexed yet.
CREATE UNIQUE INDEX messages_idempotency ON messages (session_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
