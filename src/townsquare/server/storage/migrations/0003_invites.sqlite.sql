-- 0003: invites. An invite is known to the relay only by its public key (the
-- Ed25519 key its link's secret derives), with the group's GroupInfo sealed
-- under a key the relay never sees, an expiry and a use count.

-- Townsquare: removing a member resets the group's invites unless a member
-- turns this off, so that a removed member's old link no longer works.
ALTER TABLE groups ADD COLUMN reset_invites_on_remove INTEGER NOT NULL DEFAULT 1
    CHECK (reset_invites_on_remove IN (0, 1));

-- Resetting deletes the rows: a reset invite is unknown.
CREATE TABLE invites (
    id INTEGER PRIMARY KEY,
    invite_key BLOB NOT NULL UNIQUE CHECK (length(invite_key) = 32),
    group_id BLOB NOT NULL REFERENCES groups (group_id),
    created_by BLOB NOT NULL REFERENCES devices (device_key),
    -- nonce || ChaCha20-Poly1305(GroupInfo, ratchet tree), refreshed by members.
    sealed_group_info BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    max_uses INTEGER NOT NULL CHECK (max_uses >= 1),
    uses INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE INDEX invites_by_group ON invites (group_id);
