-- Turns append their messages here, in commit order and without a secondary index. A
-- group commit then writes a few pages at the log's end, where inserting the same rows into
-- messages' (session_id, id) index dirties one index page per session in the batch. The
-- store moves the log into messages in bulk, sorted by session, about once a second (see
-- engine/src/store/sqlite/message_log.rs).
CREATE TABLE message_log (
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
