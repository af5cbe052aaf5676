-- The original's step `2025-01-31-002-device-registrations`: FCM tokens per identity.

-- guard: no-table device_registrations
create table `device_registrations` (`id` int unsigned not null auto_increment primary key, `created_at` timestamp null default CURRENT_TIMESTAMP, `updated_at` timestamp null default CURRENT_TIMESTAMP, `identity_key` varchar(255) not null, `fcm_token` varchar(500) not null, `device_id` varchar(255) null, `platform` varchar(50) null, `last_used` timestamp null, `active` boolean default '1');

-- guard: no-index device_registrations device_registrations_fcm_token_unique
alter table `device_registrations` add unique `device_registrations_fcm_token_unique`(`fcm_token`);

-- guard: no-index device_registrations device_registrations_identity_key_index
alter table `device_registrations` add index `device_registrations_identity_key_index`(`identity_key`);

-- guard: no-index device_registrations device_registrations_identity_key_active_index
alter table `device_registrations` add index `device_registrations_identity_key_active_index`(`identity_key`, `active`);

-- guard: no-index device_registrations device_registrations_last_used_index
alter table `device_registrations` add index `device_registrations_last_used_index`(`last_used`);
