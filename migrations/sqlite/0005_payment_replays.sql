-- Delivery payments are accepted once: the txid of every paying transaction the server took,
-- as the newer upstream's `payment_replays` (timestamps as INTEGER seconds, like the rest of
-- this schema; expires_at NULL: never swept).

create table if not exists payment_replays (
  transaction_id text not null primary key collate nocase,
  created_at integer not null,
  expires_at integer
);

create index if not exists payment_replays_expires_at_index on payment_replays (expires_at);
