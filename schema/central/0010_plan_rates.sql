-- Request rates per plan (`api::rate_limit`): `api_requests_per_minute` for the whole tenant,
-- `api_requests_per_member_per_minute` for each member; a plan that names neither leaves the
-- server's `--tenant-rate` / `--member-rate` (6000 and 1200 by default). The built-in `free`
-- and `team` plans get rates in line with their other limits, but only while their limits are
-- still the ones 0009 gave them: a plan an operator edited is theirs, and keeps the server's
-- rates until they name some. `unlimited` names none, so its tenants keep the flags' rates.
-- Compared by value, not text: an edit writes the same limits with its keys in another order.

UPDATE plans
SET limits = json_set(limits, '$.api_requests_per_minute', 600,
                      '$.api_requests_per_member_per_minute', 300)
WHERE slug = 'free'
  AND (SELECT count(*) FROM json_each(limits)) = 5
  AND json_extract(limits, '$.members') = 3
  AND json_extract(limits, '$.orders') = 100
  AND json_extract(limits, '$.chats') = 5
  AND json_extract(limits, '$.messages_per_day') = 500
  AND json_extract(limits, '$.webhook_endpoints') = 0;

UPDATE plans
SET limits = json_set(limits, '$.api_requests_per_minute', 3000,
                      '$.api_requests_per_member_per_minute', 600)
WHERE slug = 'team'
  AND (SELECT count(*) FROM json_each(limits)) = 5
  AND json_extract(limits, '$.members') = 25
  AND json_extract(limits, '$.orders') = 10000
  AND json_extract(limits, '$.chats') = 100
  AND json_extract(limits, '$.messages_per_day') = 20000
  AND json_extract(limits, '$.webhook_endpoints') = 5;
