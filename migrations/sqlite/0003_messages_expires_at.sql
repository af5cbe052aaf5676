-- Retention: `expires_at` (seconds since the epoch, UTC; NULL never expires) and the
-- sweeper's index, as the newer upstream's resource-safety migration has them.

alter table messages add column expires_at integer;

create index if not exists messages_expiration_index on messages (expires_at, messageId);
