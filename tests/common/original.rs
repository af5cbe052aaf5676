//! What the TypeScript server leaves in a database: the DDL of its knex migrations and its
//! migration bookkeeping, to test adoption of an existing database.

use super::db::TestDb;

/// The DDL knex 2.5.1 emits for the original's five migrations (spec §4.1), step by step.
pub const ORIGINAL_DDL: [&[&str]; 5] = [
    &[
        "create table `messageBox` (`messageBoxId` int unsigned not null auto_increment primary key, `created_at` timestamp not null default CURRENT_TIMESTAMP, `updated_at` timestamp not null default CURRENT_TIMESTAMP, `type` varchar(255) not null, `identityKey` varchar(255) not null)",
        "alter table `messageBox` add unique `messagebox_type_identitykey_unique`(`type`, `identityKey`)",
        "create table `messages` (`messageId` int unsigned not null auto_increment primary key, `created_at` timestamp not null default CURRENT_TIMESTAMP, `updated_at` timestamp not null default CURRENT_TIMESTAMP, `messageBoxId` int unsigned, `sender` varchar(255) not null, `recipient` varchar(255) not null, `body` longtext not null, `acknowledged` boolean default '0')",
        "alter table `messages` add constraint `messages_messageboxid_foreign` foreign key (`messageBoxId`) references `messageBox` (`messageBoxId`) on delete CASCADE",
    ],
    &["alter table `messages` drop `acknowledged`"],
    &[
        "alter table `messages` drop `messageId`",
        "alter table `messages` add `messageId` varchar(255) not null",
        "alter table `messages` add unique `messages_messageid_unique`(`messageId`)",
    ],
    &[
        "create table `message_permissions` (`id` int unsigned not null auto_increment primary key, `created_at` timestamp null default CURRENT_TIMESTAMP, `updated_at` timestamp null default CURRENT_TIMESTAMP, `recipient` varchar(255) not null, `sender` varchar(255) null, `message_box` varchar(255) not null, `recipient_fee` int not null)",
        "alter table `message_permissions` add unique `message_permissions_recipient_sender_message_box_unique`(`recipient`, `sender`, `message_box`)",
        "alter table `message_permissions` add index `message_permissions_recipient_index`(`recipient`)",
        "alter table `message_permissions` add index `message_permissions_recipient_message_box_index`(`recipient`, `message_box`)",
        "alter table `message_permissions` add index `message_permissions_message_box_index`(`message_box`)",
        "alter table `message_permissions` add index `message_permissions_sender_index`(`sender`)",
        "create table `server_fees` (`id` int unsigned not null auto_increment primary key, `created_at` timestamp null default CURRENT_TIMESTAMP, `updated_at` timestamp null default CURRENT_TIMESTAMP, `message_box` varchar(255) not null, `delivery_fee` int not null)",
        "alter table `server_fees` add unique `server_fees_message_box_unique`(`message_box`)",
    ],
    &[
        "create table `device_registrations` (`id` int unsigned not null auto_increment primary key, `created_at` timestamp null default CURRENT_TIMESTAMP, `updated_at` timestamp null default CURRENT_TIMESTAMP, `identity_key` varchar(255) not null, `fcm_token` varchar(500) not null, `device_id` varchar(255) null, `platform` varchar(50) null, `last_used` timestamp null, `active` boolean default '1')",
        "alter table `device_registrations` add unique `device_registrations_fcm_token_unique`(`fcm_token`)",
        "alter table `device_registrations` add index `device_registrations_identity_key_index`(`identity_key`)",
        "alter table `device_registrations` add index `device_registrations_identity_key_active_index`(`identity_key`, `active`)",
        "alter table `device_registrations` add index `device_registrations_last_used_index`(`last_used`)",
    ],
];

pub const KNEX_NAMES: [&str; 5] = [
    "2022-12-28-001-initial-migration",
    "2023-01-17-messages-update",
    "2024-03-05-001-messageID-upgrade",
    "2025-01-31-001-notification-permissions",
    "2025-01-31-002-device-registrations",
];

/// Builds what the TypeScript server leaves behind after running `steps` of its migrations,
/// recording them with `suffix` (`.js` in the standard deployment).
pub async fn create_original(db: &TestDb, steps: usize, suffix: &str) {
    for stmts in &ORIGINAL_DDL[..steps] {
        for sql in stmts.iter() {
            db.exec(sql).await;
        }
    }
    db.exec(
        "create table `knex_migrations` (`id` int unsigned not null auto_increment primary key, `name` varchar(255), `batch` int, `migration_time` timestamp null); \
         create table `knex_migrations_lock` (`index` int unsigned not null auto_increment primary key, `is_locked` int); \
         insert into `knex_migrations_lock` (`is_locked`) values (0)",
    )
    .await;
    for name in &KNEX_NAMES[..steps] {
        db.exec(&format!(
            "insert into `knex_migrations` (`name`, `batch`, `migration_time`) values ('{name}{suffix}', 1, '2025-09-01 10:00:00')"
        ))
        .await;
    }
}
