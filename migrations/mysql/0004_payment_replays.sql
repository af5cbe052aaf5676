-- Delivery payments are accepted once: the txid of every paying transaction the server took
-- is kept here. Table, columns and index exactly as the newer upstream's
-- 2026-08-04-001-resource-safety creates them (knex: transaction_id string(64) primary key,
-- created_at timestamp not null default now, expires_at timestamp null with its index), so a
-- database that upstream migrated already has it and the guards skip it; both servers then
-- refuse each other's replays. Body payments are written with expires_at NULL (never swept).

-- guard: no-table payment_replays
create table `payment_replays` (`transaction_id` varchar(64) not null, `created_at` timestamp not null default CURRENT_TIMESTAMP, `expires_at` timestamp null, primary key (`transaction_id`));
-- guard: no-index payment_replays payment_replays_expires_at_index
alter table `payment_replays` add index `payment_replays_expires_at_index`(`expires_at`);
