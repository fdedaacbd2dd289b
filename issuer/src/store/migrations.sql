-- The issuer store's schema, one set for SQLite (3.45+) and PostgreSQL (15+).
-- Portable subset only: TEXT, BIGINT, INTEGER; no AUTOINCREMENT/SERIAL.
-- Idempotent: every replica runs it at start, inside one transaction (on
-- PostgreSQL after taking an advisory lock, so that concurrent starts queue).
-- Changing the schema means bumping schema_version and adding guarded steps below.

-- One row: the revision counter that every mutation bumps, and the schema version.
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL,
    schema_version BIGINT NOT NULL
);
INSERT INTO meta (id, revision, schema_version)
    SELECT 1, 0, 1 WHERE NOT EXISTS (SELECT 1 FROM meta WHERE id = 1);

-- Join tokens, by the SHA-256 hex of their text. used_at is NULL until redeemed.
CREATE TABLE IF NOT EXISTS join_tokens (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT NULL
);

-- Devices: an ed25519 public key (hex) pinned under a name.
CREATE TABLE IF NOT EXISTS devices (
    name TEXT PRIMARY KEY,
    public_key TEXT NOT NULL
);

-- Registration entries. List fields are JSON arrays of strings. A deleted entry
-- stays as a tombstone (deleted = 1) so that agents syncing by revision see it.
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    selectors TEXT NOT NULL,
    node_selectors TEXT NOT NULL,
    ttl_secs BIGINT NOT NULL,
    audiences TEXT NOT NULL,
    networks TEXT NOT NULL,
    revision BIGINT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1))
);
CREATE INDEX IF NOT EXISTS entries_revision ON entries (revision);

-- Attested agents. selectors is a JSON array; status is active|suspended|revoked.
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    selectors TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),
    attested_at BIGINT NOT NULL,
    credential_jti TEXT NOT NULL,
    credential_exp BIGINT NOT NULL
);

-- Denials (the deny list). seq is the revision that added the row, which orders
-- them by insertion without AUTOINCREMENT/SERIAL.
CREATE TABLE IF NOT EXISTS denials (
    seq BIGINT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('jti', 'chain')),
    value TEXT NOT NULL,
    UNIQUE (kind, value)
);

-- Each replica's published JWT-SVID signing key (a JWK, JSON) until expires_at.
CREATE TABLE IF NOT EXISTS jwt_keys (
    kid TEXT PRIMARY KEY,
    jwk TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
