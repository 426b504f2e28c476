-- 0005: join requests. In a group whose policy requires an admin's approval, a
-- newcomer holding an invite link asks to join: it leaves a KeyPackage and a
-- note sealed under the link's key (its name, which the relay cannot read),
-- signed with the invite key; an admin's device adds it by an ordinary commit.

CREATE TABLE join_requests (
    group_id BLOB NOT NULL REFERENCES groups (group_id),
    device_key BLOB NOT NULL REFERENCES devices (device_key),
    invite_key BLOB NOT NULL CHECK (length(invite_key) = 32),
    key_package BLOB NOT NULL,
    sealed_note BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, device_key)
);
