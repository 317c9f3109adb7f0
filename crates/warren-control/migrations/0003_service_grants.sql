-- Service URL grants: one row per shared sandbox port. A token names its grant (`gid`), and
-- verification refuses a token whose grant row is gone, so deleting the row revokes every
-- token minted for it. Re-minting for the same port renews the row and keeps its id.
CREATE TABLE service_grants (
    id             TEXT PRIMARY KEY,
    sandbox_id     TEXT NOT NULL,
    port           INTEGER NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users(id),
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    embed_origins  TEXT NOT NULL,
    UNIQUE (sandbox_id, port)
);
