-- Our own record of the steps we add on top of the original schema. Kept apart from
-- knex_migrations because knex refuses a directory that lacks a recorded name.

create table if not exists `messagebox_migrations` (`name` varchar(255) not null primary key, `applied_at` timestamp not null default CURRENT_TIMESTAMP);
