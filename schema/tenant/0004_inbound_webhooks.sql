-- Messages from outside the company, posted by an inbound webhook (a messaging bridge, say).
-- They have no user: user_id is 0, which no catalog user has, and the sender is named in
-- external_author (with the sender's own id for that person, if it gave one). inbound_key
-- names the delivery that made the message (source:webhook-id): a job run twice, as after a
-- worker died between its commit and saying so, posts the message once.

ALTER TABLE messages ADD COLUMN external_author TEXT
    CHECK (external_author IS NULL OR length(external_author) BETWEEN 1 AND 200);
ALTER TABLE messages ADD COLUMN external_author_id TEXT
    CHECK (external_author_id IS NULL OR length(external_author_id) BETWEEN 1 AND 200);
ALTER TABLE messages ADD COLUMN inbound_key TEXT;

CREATE UNIQUE INDEX messages_by_inbound_key ON messages (inbound_key)
    WHERE inbound_key IS NOT NULL;
