-- knex's own bookkeeping, created the way knex 2.5.1 creates it, so the TypeScript server
-- can still be pointed at a database we created. Not a step: it runs whenever an original
-- step has to be recorded.

-- guard: no-table knex_migrations
create table `knex_migrations` (`id` int unsigned not null auto_increment primary key, `name` varchar(255), `batch` int, `migration_time` timestamp null);

-- guard: no-table knex_migrations_lock
create table `knex_migrations_lock` (`index` int unsigned not null auto_increment primary key, `is_locked` int);

insert into `knex_migrations_lock` (`index`, `is_locked`) select 1, 0 from dual where not exists (select 1 from `knex_migrations_lock`);
