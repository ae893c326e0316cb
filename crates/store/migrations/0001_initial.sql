-- Airlock hub store, schema version 1.
--
-- The same text runs on SQLite and PostgreSQL: only TEXT, BIGINT and BYTEA
-- columns. (SQLite accepts the name BYTEA; its affinity, NUMERIC, stores a
-- BLOB value unchanged.) Statements are separated by a line ending in ';'.
-- Timestamps are unix milliseconds.

-- API tokens of members. Only SHA-256 of the token's secret is stored.
CREATE TABLE tokens (
    id TEXT NOT NULL PRIMARY KEY,
    member TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT,
    revoked_at_ms BIGINT
);

-- One row per collaboration; `version` is its current (highest) version.
CREATE TABLE collaborations (
    name TEXT NOT NULL PRIMARY KEY,
    id TEXT NOT NULL,
    version BIGINT NOT NULL CHECK (version >= 1),
    created_at_ms BIGINT NOT NULL
);

-- Every version of every collaboration's definition, never updated.
CREATE TABLE collaboration_versions (
    name TEXT NOT NULL REFERENCES collaborations (name),
    version BIGINT NOT NULL CHECK (version >= 1),
    toml TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE queries (
    id TEXT NOT NULL PRIMARY KEY,
    collab TEXT NOT NULL REFERENCES collaborations (name),
    member TEXT NOT NULL,
    sql_text TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('submitted', 'checked', 'running', 'released', 'refused', 'failed')),
    detail TEXT,
    row_count BIGINT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE INDEX queries_by_collab ON queries (collab, created_at_ms);

CREATE INDEX queries_by_state ON queries (state);

-- Results of released queries (Arrow IPC bytes), apart from `queries` so
-- that listing queries never reads them.
CREATE TABLE query_results (
    query_id TEXT NOT NULL PRIMARY KEY REFERENCES queries (id),
    data BYTEA NOT NULL
);

-- The audit chains, one per collaboration name. The primary key is the
-- UNIQUE (collab, seq) that keeps concurrent appends from forking a chain.
CREATE TABLE audit_log (
    collab TEXT NOT NULL,
    seq BIGINT NOT NULL CHECK (seq >= 1),
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (collab, seq)
);
