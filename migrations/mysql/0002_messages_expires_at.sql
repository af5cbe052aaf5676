-- Retention: every new message gets `expires_at` (now + MESSAGE_BOX_RETENTION_DAYS, NULL to
-- keep it); listing and quotas skip expired rows and the sweeper deletes them. Column and
-- index exactly as the newer upstream's 2026-08-04-001-resource-safety adds them, so a
-- database that upstream migrated already has both and the guards skip them.

-- guard: no-column messages expires_at
alter table `messages` add `expires_at` timestamp null;
-- guard: no-index messages messages_expiration_index
alter table `messages` add index `messages_expiration_index`(`expires_at`, `messageId`);
