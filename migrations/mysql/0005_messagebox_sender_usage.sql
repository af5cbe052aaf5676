-- The sender storage quota reads one row per sender instead of aggregating over `messages`
-- (which needed a `(sender, expires_at)` index written on every insert): messages and body
-- bytes (UTF-8, `OCTET_LENGTH`) of every stored row of the sender, expired or not, kept exact
-- by the server in the same transaction as each insert and delete (src/store/usage.rs).
-- Filled once from the rows already stored (idempotent: a re-run sets the same figures; rows
-- other programs store or delete later are not counted: README "Storage quotas"); the sender
-- index an earlier version created goes.

-- guard: no-table messagebox_sender_usage
create table `messagebox_sender_usage` (`sender` varchar(255) not null, `messages` bigint not null default 0, `bytes` bigint not null default 0, primary key (`sender`));

insert into `messagebox_sender_usage` (`sender`, `messages`, `bytes`)
  select `sender`, count(*), coalesce(sum(octet_length(`body`)), 0) from `messages` group by `sender`
  on duplicate key update `messages` = values(`messages`), `bytes` = values(`bytes`);

-- guard: index messages messages_sender_expires_at_index
alter table `messages` drop index `messages_sender_expires_at_index`;
