-- 0002: delivery. Groups, their member devices, their append-only logs, the
-- Welcomes waiting for new devices, and each device's cursor per group.
--
-- Sequence numbers are per group, from 1, without gaps: groups.last_seq is
-- read and advanced inside the write transaction that inserts the log row.
-- Tables holding MLS messages, GroupInfos or trees keep a rowid, as SQLite
-- advises for large rows; the others are WITHOUT ROWID.

-- epoch, group_info and ratchet_tree describe the current epoch: the relay
-- rebuilds its public view of the group (PublicGroup) from them.
CREATE TABLE groups (
    id INTEGER PRIMARY KEY,
    group_id BLOB NOT NULL UNIQUE CHECK (length(group_id) BETWEEN 1 AND 255),
    epoch INTEGER NOT NULL CHECK (epoch >= 0),
    -- The current epoch's MLSMessage(GroupInfo), as its committer uploaded it.
    group_info BLOB NOT NULL,
    -- The current epoch's ratchet tree, as the relay computed it.
    ratchet_tree BLOB NOT NULL,
    last_seq INTEGER NOT NULL CHECK (last_seq >= 0),
    created_at INTEGER NOT NULL
);

-- The devices the relay delivers to: exactly the leaves of the current
-- epoch's tree, by their signature key, which is the device key.
CREATE TABLE group_devices (
    group_id BLOB NOT NULL REFERENCES groups (group_id),
    device_key BLOB NOT NULL REFERENCES devices (device_key),
    leaf_index INTEGER NOT NULL CHECK (leaf_index >= 0),
    -- The seq of the commit that added the device (0 for the creator); the
    -- device is served nothing at or before it.
    joined_seq INTEGER NOT NULL CHECK (joined_seq >= 0),
    PRIMARY KEY (group_id, device_key),
    UNIQUE (group_id, leaf_index)
) WITHOUT ROWID;

CREATE INDEX group_devices_by_device ON group_devices (device_key);

CREATE TABLE group_log (
    id INTEGER PRIMARY KEY,
    group_id BLOB NOT NULL REFERENCES groups (group_id),
    seq INTEGER NOT NULL CHECK (seq >= 1),
    epoch INTEGER NOT NULL CHECK (epoch >= 0),
    kind TEXT NOT NULL CHECK (kind IN ('commit', 'proposal', 'application')),
    sender_device BLOB NOT NULL REFERENCES devices (device_key),
    client_message_id BLOB NOT NULL,
    -- The MLSMessage as received: PublicMessage for handshakes, PrivateMessage
    -- (ciphertext) for application data.
    message BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    UNIQUE (group_id, seq),
    -- Exactly once: a device's retry with the same id is the same entry.
    UNIQUE (sender_device, client_message_id)
);

-- The first commit stored for an epoch wins (RFC 9420 §14, Townsquare choice);
-- the application checks first, this index makes a second one impossible.
CREATE UNIQUE INDEX group_log_one_commit_per_epoch ON group_log (group_id, epoch)
WHERE kind = 'commit';

-- The relay replays the current epoch's proposals when it rebuilds a group.
CREATE INDEX group_log_proposals ON group_log (group_id, epoch, seq)
WHERE kind = 'proposal';

-- One Welcome per commit that adds devices, stored once however many it adds,
-- with the new epoch's tree for Welcomes whose GroupInfo does not carry it.
CREATE TABLE welcomes (
    id INTEGER PRIMARY KEY,
    group_id BLOB NOT NULL,
    commit_seq INTEGER NOT NULL,
    epoch INTEGER NOT NULL CHECK (epoch >= 1),
    welcome BLOB NOT NULL,
    ratchet_tree BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (group_id, commit_seq),
    FOREIGN KEY (group_id, commit_seq) REFERENCES group_log (group_id, seq)
);

-- Who a Welcome waits for. A row goes when its device acknowledges a cursor
-- at or past the commit, or leaves the group; a Welcome goes with its last row.
CREATE TABLE welcome_recipients (
    device_key BLOB NOT NULL REFERENCES devices (device_key),
    welcome_id INTEGER NOT NULL REFERENCES welcomes (id) ON DELETE CASCADE,
    PRIMARY KEY (device_key, welcome_id)
) WITHOUT ROWID;

CREATE INDEX welcome_recipients_by_welcome ON welcome_recipients (welcome_id);

-- The last seq each member device has processed, per group; it only moves forward.
CREATE TABLE cursors (
    device_key BLOB NOT NULL,
    group_id BLOB NOT NULL REFERENCES groups (group_id),
    acked_seq INTEGER NOT NULL CHECK (acked_seq >= 0),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (device_key, group_id),
    FOREIGN KEY (group_id, device_key) REFERENCES group_devices (group_id, device_key)
        ON DELETE CASCADE
) WITHOUT ROWID;
