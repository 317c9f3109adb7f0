-- Volumes (beta, LANGSMITH-API.md §13): persistent, quota-limited directories mounted into
-- sandboxes, one btrfs subvolume each. One row per volume, its fields as JSON; attachments are
-- read from the sandboxes' configs, so deleting a sandbox detaches its volumes.
CREATE TABLE volumes (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    name         TEXT NOT NULL,
    body         TEXT NOT NULL,
    UNIQUE (workspace_id, name)
);
