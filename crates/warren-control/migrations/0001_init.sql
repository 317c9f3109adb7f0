-- Identity: workspaces hold users, users hold API keys (stored as SHA-256 hashes only).
CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    name          TEXT NOT NULL,
    is_admin      INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    key_hash    TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);

-- Sandboxes. `runtime_id` names the sandbox to the driver (cgroups, subvolumes); `handle` is the
-- driver's handle while it runs, so a restarted daemon can re-adopt it.
CREATE TABLE sandboxes (
    id              TEXT PRIMARY KEY,
    workspace_id    TEXT NOT NULL REFERENCES workspaces(id),
    created_by      TEXT NOT NULL REFERENCES users(id),
    name            TEXT NOT NULL,
    runtime_id      TEXT NOT NULL UNIQUE,
    status          TEXT NOT NULL,
    status_message  TEXT,
    config          TEXT NOT NULL,
    handle          TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    stopped_at      TEXT,
    UNIQUE (workspace_id, name)
);

-- Append-only: rows are inserted, never updated or deleted.
CREATE TABLE audit (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    at            TEXT NOT NULL,
    workspace_id  TEXT,
    user_id       TEXT,
    action        TEXT NOT NULL,
    target        TEXT,
    detail        TEXT
);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
