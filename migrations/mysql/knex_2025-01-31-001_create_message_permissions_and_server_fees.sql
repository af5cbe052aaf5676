-- The original's step `2025-01-31-001-notification-permissions`: per-recipient fee rules
-- (sender NULL = box-wide) and the server's delivery fee per box, seeded for the three
-- standard boxes (only names not already present, like the original).

-- guard: no-table message_permissions
create table `message_permissions` (`id` int unsigned not null auto_increment primary key, `created_at` timestamp null default CURRENT_TIMESTAMP, `updated_at` timestamp null default CURRENT_TIMESTAMP, `recipient` varchar(255) not null, `sender` varchar(255) null, `message_box` varchar(255) not null, `recipient_fee` int not null);

-- guard: no-index message_permissions message_permissions_recipient_sender_message_box_unique
alter table `message_permissions` add unique `message_permissions_recipient_sender_message_box_unique`(`recipient`, `sender`, `message_box`);

-- guard: no-index message_permissions message_permissions_recipient_index
alter table `message_permissions` add index `message_permissions_recipient_index`(`recipient`);

-- guard: no-index message_permissions message_permissions_recipient_message_box_index
alter table `message_permissions` add index `message_permissions_recipient_message_box_index`(`recipient`, `message_box`);

-- guard: no-index message_permissions message_permissions_message_box_index
alter table `message_permissions` add index `message_permissions_message_box_index`(`message_box`);

-- guard: no-index message_permissions message_permissions_sender_index
alter table `message_permissions` add index `message_permissions_sender_index`(`sender`);

-- guard: no-table server_fees
create table `server_fees` (`id` int unsigned not null auto_increment primary key, `created_at` timestamp null default CURRENT_TIMESTAMP, `updated_at` timestamp null default CURRENT_TIMESTAMP, `message_box` varchar(255) not null, `delivery_fee` int not null);

-- guard: no-index server_fees server_fees_message_box_unique
alter table `server_fees` add unique `server_fees_message_box_unique`(`message_box`);

insert into `server_fees` (`message_box`, `delivery_fee`, `created_at`, `updated_at`) select 'notifications', 10, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP from dual where not exists (select 1 from `server_fees` where `message_box` = 'notifications');

insert into `server_fees` (`message_box`, `delivery_fee`, `created_at`, `updated_at`) select 'inbox', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP from dual where not exists (select 1 from `server_fees` where `message_box` = 'inbox');

insert into `server_fees` (`message_box`, `delivery_fee`, `created_at`, `updated_at`) select 'payment_inbox', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP from dual where not exists (select 1 from `server_fees` where `message_box` = 'payment_inbox');
