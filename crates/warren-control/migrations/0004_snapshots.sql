-- Snapshots: immutable root filesystems addressed by id, each stored as the read-only image
-- `snapshot/<id>:latest`. A tag is a mutable pointer `name:tag` → id within a workspace;
-- re-publishing a tag moves it, and the old snapshot keeps its id (Docker semantics). The
-- system default image is not a row: it belongs to every workspace and has a fixed id.
CREATE TABLE snapshots (
    id                TEXT PRIMARY KEY,
    workspace_id      TEXT NOT NULL,
    name              TEXT NOT NULL,
    status            TEXT NOT NULL,
    status_message    TEXT,
    fs_capacity_bytes INTEGER NOT NULL,
    fs_used_bytes     INTEGER,
    docker_image      TEXT,
    image_digest      TEXT,
    source_sandbox_id TEXT,
    registry_id       TEXT,
    run_config        TEXT NOT NULL,
    labels            TEXT NOT NULL,
    description       TEXT,
    created_by        TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX snapshots_by_name ON snapshots (workspace_id, name);
CREATE TABLE snapshot_tags (
    workspace_id TEXT NOT NULL,
    name         TEXT NOT NULL,
    tag          TEXT NOT NULL,
    snapshot_id  TEXT NOT NULL,
    PRIMARY KEY (workspace_id, name, tag)
);
CREATE INDEX snapshot_tags_by_id ON snapshot_tags (snapshot_id);
