-- The sender storage quota reads one row per sender instead of aggregating over `messages`
-- (which needed a `(sender, expires_at)` index written on every insert): messages and body
-- bytes (UTF-8) of every stored row of the sender, expired or not, kept exact by the server
-- in the same transaction as each insert and delete (src/store/usage.rs). Filled once from
-- the rows already stored; the sender index an earlier version created goes.

create table if not exists messagebox_sender_usage (
  sender text not null primary key collate nocase,
  messages integer not null,
  bytes integer not null
) without rowid;

insert into messagebox_sender_usage (sender, messages, bytes)
  select sender, count(*), coalesce(sum(octet_length(body)), 0) from messages group by sender;

drop index if exists messages_sender_expires_at_index;
