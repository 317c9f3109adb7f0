-- Workspace secrets: credentials the egress proxy injects into sandboxes' outbound requests.
-- `value` is stored as given, unencrypted: the database file is private to the daemon (0600,
-- made so before SQLite first opens it), and a key kept beside it would protect nothing more.
-- `hosts` is the JSON list of the custom hosts the value may be sent to ('[]' = the built-in
-- defaults for the key, if any), kept in the row so the proxy's lookup is one primary-key read.
CREATE TABLE secrets (
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,
    hosts         TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (workspace_id, key)
);
