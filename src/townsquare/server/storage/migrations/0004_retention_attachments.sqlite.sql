-- 0004: retention and attachments. The relay deletes log entries every member
-- device has acknowledged, and everything (entries, Welcomes, attachments)
-- older than the retention time; attachments are encrypted blobs stored by
-- their SHA-256.

-- Every entry up to pruned_seq may be deleted: a device asking for entries
-- after a seq below it is answered 410 log-pruned. last_seq stays, so the
-- numbering goes on. Some entries at or below it are kept for the relay
-- itself (the current epoch's proposals, commits with a pending Welcome)
-- but are no longer served.
ALTER TABLE groups ADD COLUMN pruned_seq INTEGER NOT NULL DEFAULT 0
    CHECK (pruned_seq >= 0);

-- Retention finds a group's entries older than the retention time.
CREATE INDEX group_log_by_age ON group_log (group_id, received_at);

CREATE INDEX welcomes_by_age ON welcomes (created_at);

-- content is NULL once the blob has expired: the row stays a while longer as
-- a tombstone, so that a late download is told 410 attachment-expired rather
-- than 404. A rowid table: blobs are large, and downloads read them piece by
-- piece through SQLite's incremental blob I/O, which addresses rows by rowid.
CREATE TABLE attachments (
    id INTEGER PRIMARY KEY,
    -- SHA-256 of content: the blob's address, so one blob is stored once.
    sha256 BLOB NOT NULL UNIQUE CHECK (length(sha256) = 32),
    size INTEGER NOT NULL CHECK (size >= 0),
    content BLOB CHECK (content IS NULL OR length(content) = size),
    uploaded_by BLOB NOT NULL REFERENCES devices (device_key),
    uploaded_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE INDEX attachments_by_expiry ON attachments (expires_at);
