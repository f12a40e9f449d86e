-- The workspace: chats with their participants and messages, and orders with
-- the history of their changes. Timestamps are RFC 3339 UTC text with
-- milliseconds (YYYY-MM-DDTHH:MM:SS.mmmZ), which sorts in time order; ids break
-- ties. User ids refer to the catalog's users, which live in another file, so
-- they cannot be foreign keys: the workspace code checks membership on write.
-- Lengths are also checked in Rust (with messages naming every bad field);
-- the CHECKs here only keep a hand-edited or buggy write from storing nonsense.

CREATE TABLE chats (
    id          INTEGER PRIMARY KEY,
    title       TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    kind        TEXT NOT NULL CHECK (kind IN ('direct', 'group')),
    created_by  INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    archived_at TEXT
) STRICT;

CREATE TABLE chat_participants (
    chat_id              INTEGER NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id              INTEGER NOT NULL,
    joined_at            TEXT NOT NULL,
    -- Everything up to and including this message id counts as read.
    last_read_message_id INTEGER,
    PRIMARY KEY (chat_id, user_id)
) STRICT, WITHOUT ROWID;

-- "The chats I take part in".
CREATE INDEX chat_participants_by_user ON chat_participants (user_id, chat_id);

CREATE TABLE messages (
    id         INTEGER PRIMARY KEY,
    chat_id    INTEGER NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL,
    -- Kept on soft delete (reads blank it); length() counts characters.
    body       TEXT NOT NULL CHECK (length(body) BETWEEN 1 AND 10000),
    created_at TEXT NOT NULL,
    edited_at  TEXT,
    deleted_at TEXT
) STRICT;

-- Newest-first pages of one chat, unread counts and last messages.
CREATE INDEX messages_by_chat ON messages (chat_id, id);

-- Order numbers come from here, never from max(number) + 1, so that the
-- number of a deleted order is never handed out again. The row is updated
-- inside the creating BEGIN IMMEDIATE transaction, which serialises creators.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL CHECK (value >= 0)
) STRICT;

INSERT INTO counters (name, value) VALUES ('order_number', 0);

CREATE TABLE orders (
    id             INTEGER PRIMARY KEY,
    number         INTEGER NOT NULL UNIQUE CHECK (number > 0),
    title          TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    customer_name  TEXT NOT NULL CHECK (length(customer_name) BETWEEN 1 AND 200),
    customer_email TEXT,
    customer_phone TEXT,
    amount_minor   INTEGER NOT NULL CHECK (amount_minor >= 0),
    currency       TEXT NOT NULL CHECK (length(currency) = 3 AND currency GLOB '[A-Z][A-Z][A-Z]'),
    status         TEXT NOT NULL CHECK (status IN ('new', 'confirmed', 'in_progress',
                                                   'shipped', 'delivered', 'cancelled')),
    assigned_to    INTEGER,
    created_by     INTEGER NOT NULL,
    notes          TEXT NOT NULL DEFAULT '' CHECK (length(notes) <= 10000),
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
) STRICT;

-- Keyset pagination: each sort key with the id as tie-break (number is
-- already unique).
CREATE INDEX orders_by_created ON orders (created_at, id);
CREATE INDEX orders_by_updated ON orders (updated_at, id);
-- "Mine" scopes and filters.
CREATE INDEX orders_by_assignee ON orders (assigned_to, id);
CREATE INDEX orders_by_creator ON orders (created_by, id);
CREATE INDEX orders_by_status ON orders (status, id);

CREATE TABLE order_events (
    id         INTEGER PRIMARY KEY,
    order_id   INTEGER NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL,
    at         TEXT NOT NULL,
    -- A column name of orders, or 'created'.
    field      TEXT NOT NULL,
    from_value TEXT,
    to_value   TEXT
) STRICT;

CREATE INDEX order_events_by_order ON order_events (order_id, id);
