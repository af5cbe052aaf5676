-- The original's final schema (five knex steps folded into one), adapted to SQLite:
-- * timestamps are INTEGER seconds since the Unix epoch, UTC (the API's `Timestamp`);
-- * keys, ids, box names and tokens are COLLATE NOCASE, like MySQL's case-insensitive
--   default collations (NOCASE folds ASCII only);
-- * `messages` keeps no declared primary key (SQLite adds its implicit rowid).

create table if not exists messageBox (
  messageBoxId integer primary key autoincrement,
  created_at integer not null,
  updated_at integer not null,
  type text not null collate nocase,
  identityKey text not null collate nocase,
  constraint messagebox_type_identitykey_unique unique (type, identityKey)
);

create table if not exists messages (
  created_at integer not null,
  updated_at integer not null,
  messageBoxId integer references messageBox (messageBoxId) on delete cascade,
  sender text not null collate nocase,
  recipient text not null collate nocase,
  body text not null,
  messageId text not null collate nocase,
  constraint messages_messageid_unique unique (messageId)
);

create index if not exists messages_messageboxid_foreign on messages (messageBoxId);

create table if not exists message_permissions (
  id integer primary key autoincrement,
  created_at integer,
  updated_at integer,
  recipient text not null collate nocase,
  sender text collate nocase,
  message_box text not null collate nocase,
  recipient_fee integer not null,
  constraint message_permissions_recipient_sender_message_box_unique unique (recipient, sender, message_box)
);

create index if not exists message_permissions_recipient_index on message_permissions (recipient);
create index if not exists message_permissions_recipient_message_box_index on message_permissions (recipient, message_box);
create index if not exists message_permissions_message_box_index on message_permissions (message_box);
create index if not exists message_permissions_sender_index on message_permissions (sender);

create table if not exists server_fees (
  id integer primary key autoincrement,
  created_at integer,
  updated_at integer,
  message_box text not null collate nocase,
  delivery_fee integer not null,
  constraint server_fees_message_box_unique unique (message_box)
);

insert into server_fees (message_box, delivery_fee, created_at, updated_at)
  select 'notifications', 10, unixepoch(), unixepoch()
  where not exists (select 1 from server_fees where message_box = 'notifications');
insert into server_fees (message_box, delivery_fee, created_at, updated_at)
  select 'inbox', 0, unixepoch(), unixepoch()
  where not exists (select 1 from server_fees where message_box = 'inbox');
insert into server_fees (message_box, delivery_fee, created_at, updated_at)
  select 'payment_inbox', 0, unixepoch(), unixepoch()
  where not exists (select 1 from server_fees where message_box = 'payment_inbox');

create table if not exists device_registrations (
  id integer primary key autoincrement,
  created_at integer,
  updated_at integer,
  identity_key text not null collate nocase,
  fcm_token text not null collate nocase,
  device_id text,
  platform text,
  last_used integer,
  active integer default 1,
  constraint device_registrations_fcm_token_unique unique (fcm_token)
);

create index if not exists device_registrations_identity_key_index on device_registrations (identity_key);
create index if not exists device_registrations_identity_key_active_index on device_registrations (identity_key, active);
create index if not exists device_registrations_last_used_index on device_registrations (last_used);
