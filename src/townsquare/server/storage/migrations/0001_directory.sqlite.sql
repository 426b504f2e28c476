-- 0001: the directory. Accounts and their devices, the nonces of signed
-- requests, rate-limit windows, and each device's KeyPackages.
--
-- Keys are raw 32-byte Ed25519 public keys; times are Unix seconds.

CREATE TABLE accounts (
    account_key BLOB PRIMARY KEY CHECK (length(account_key) = 32),
    -- When the relay registered the account.
    registered_at INTEGER NOT NULL
) WITHOUT ROWID;

-- id: registration order, in which an account's devices are listed.
CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    device_key BLOB NOT NULL UNIQUE CHECK (length(device_key) = 32),
    account_key BLOB NOT NULL REFERENCES accounts (account_key),
    -- The certificate (docs/protocol.md): created_at and the account key's signature.
    certified_at INTEGER NOT NULL,
    certificate_signature BLOB NOT NULL CHECK (length(certificate_signature) = 64),
    registered_at INTEGER NOT NULL
);

CREATE INDEX devices_by_account ON devices (account_key, id);

-- A nonce is kept until a request carrying it would be refused as stale anyway;
-- no foreign key, because a registration's nonce is used before its device exists.
CREATE TABLE request_nonces (
    device_key BLOB NOT NULL,
    nonce BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (device_key, nonce)
) WITHOUT ROWID;

CREATE INDEX request_nonces_by_expiry ON request_nonces (expires_at);

-- Fixed-window counters of rate-limited actions (such as claiming KeyPackages),
-- kept in the database so that every relay process sharing it counts together.
CREATE TABLE quotas (
    subject BLOB NOT NULL,
    action TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    used INTEGER NOT NULL CHECK (used >= 0),
    PRIMARY KEY (subject, action)
) WITHOUT ROWID;

-- One-time KeyPackages are deleted when claimed, oldest (lowest id) first; at
-- most one last-resort KeyPackage per device, which a claim hands out but keeps.
CREATE TABLE key_packages (
    id INTEGER PRIMARY KEY,
    device_key BLOB NOT NULL REFERENCES devices (device_key) ON DELETE CASCADE,
    last_resort INTEGER NOT NULL CHECK (last_resort IN (0, 1)),
    -- SHA-256 of key_package: the same package is never stored twice for a device.
    digest BLOB NOT NULL CHECK (length(digest) = 32),
    key_package BLOB NOT NULL,
    uploaded_at INTEGER NOT NULL,
    UNIQUE (device_key, digest)
);

CREATE INDEX key_packages_by_device ON key_packages (device_key, last_resort, id);

CREATE UNIQUE INDEX key_packages_one_last_resort ON key_packages (device_key)
WHERE last_resort = 1;
