-- The original's step `2022-12-28-001-initial-migration`, as knex 2.5.1 emits it for mysql2.
-- Each statement runs only when its guard says the object is still missing, so a partially
-- migrated database is completed without touching what already exists.

-- guard: no-table messageBox
create table `messageBox` (`messageBoxId` int unsigned not null auto_increment primary key, `created_at` timestamp not null default CURRENT_TIMESTAMP, `updated_at` timestamp not null default CURRENT_TIMESTAMP, `type` varchar(255) not null, `identityKey` varchar(255) not null);

-- guard: no-index messageBox messagebox_type_identitykey_unique
alter table `messageBox` add unique `messagebox_type_identitykey_unique`(`type`, `identityKey`);

-- guard: no-table messages
create table `messages` (`messageId` int unsigned not null auto_increment primary key, `created_at` timestamp not null default CURRENT_TIMESTAMP, `updated_at` timestamp not null default CURRENT_TIMESTAMP, `messageBoxId` int unsigned, `sender` varchar(255) not null, `recipient` varchar(255) not null, `body` longtext not null, `acknowledged` boolean default '0');

-- guard: no-foreign-key messages messages_messageboxid_foreign
alter table `messages` add constraint `messages_messageboxid_foreign` foreign key (`messageBoxId`) references `messageBox` (`messageBoxId`) on delete CASCADE;
