-- Container registry credentials (LANGSMITH-API.md §2.5): one row per registry of a workspace,
-- its fields as JSON. The password is kept as given (the database file is private to the
-- daemon) and never returned by the API.
CREATE TABLE registries (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    name         TEXT NOT NULL,
    body         TEXT NOT NULL,
    UNIQUE (workspace_id, name)
);
