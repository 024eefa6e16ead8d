-- The ownership epoch of each session (see store::Epoch): raised by every claim, checked by
-- every group commit. Rows written before this column existed start at the first epoch.
ALTER TABLE sessions ADD COLUMN epoch INTEGER NOT NULL DEFAULT 1;
