-- Templates (a Warren extension): a named snapshot with resources, network policy and
-- run_config that creates start from, and the size of its warm pool. One JSON row each.
CREATE TABLE templates (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    name         TEXT NOT NULL,
    body         TEXT NOT NULL,
    UNIQUE (workspace_id, name)
);
