-- Files attached to a message or an order. The bytes live outside the
-- database, under tenants/<uuid>/files/, named by their SHA-256 and stored once
-- per content; a row is one attachment of them. `name` and `content_type` are
-- what the uploader said, only ever shown and sent back, never used as a path.

CREATE TABLE files (
    id           INTEGER PRIMARY KEY,
    sha256       TEXT NOT NULL CHECK (length(sha256) = 64),
    size         INTEGER NOT NULL CHECK (size >= 0),
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    content_type TEXT NOT NULL CHECK (length(content_type) BETWEEN 3 AND 127),
    uploaded_by  INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    message_id   INTEGER REFERENCES messages (id) ON DELETE CASCADE,
    order_id     INTEGER REFERENCES orders (id) ON DELETE CASCADE,
    CHECK ((message_id IS NULL) <> (order_id IS NULL))
) STRICT;

CREATE INDEX files_by_message ON files (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX files_by_order ON files (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX files_by_content ON files (sha256);
