//! Migrations: which schema each backend needs and how a database gets there.
//!
//! The SQL lives in `migrations/{mysql,sqlite}/`, one file per step, embedded at build time.
//!
//! **MySQL.** The schema is the original's, produced by its five knex migrations, which we
//! replay with the DDL knex emits. They are recorded in `knex_migrations` under their `.js`
//! names, the way knex would, so the TypeScript server can still be pointed at the database.
//! Steps of our own (extra indexes) are recorded in `messagebox_migrations`, never in
//! `knex_migrations`: knex refuses to run when a recorded name is missing from its directory.
//! A database the original created is adopted as it is. Only unrecorded original steps run
//! (a partially migrated database), and each of their statements carries a guard checked
//! against `information_schema`, so nothing that already exists is re-created. Operator
//! data (`server_fees`) and upstream additions (extra tables, nullable columns, unknown
//! `knex_migrations` rows) are left alone. A named lock (`GET_LOCK`) serialises processes
//! that start together.
//!
//! **SQLite.** One step creates the final schema and the others add to it; they are recorded
//! in `messagebox_migrations` inside one `BEGIN IMMEDIATE` transaction, which is also what
//! serialises concurrent migrators.
//!
//! A step that a later one undoes leaves the list (its name stays recorded where it ran):
//! `0003` (MySQL) / `0004` (SQLite) created the `(sender, expires_at)` index, which the
//! sender usage step (`0005` / `0006`) drops where it exists; new databases never build it.
//!
//! Guards are comment lines in the SQL files, right above the statement they protect:
//! `-- guard: no-table T`, `no-index T I`, `index T I`, `no-column T C`, `column T C`,
//! `column-type T C TYPE` (`information_schema.COLUMNS.DATA_TYPE`), `no-foreign-key T NAME`.
//! A statement without a guard always runs (it must be idempotent by itself).

use std::collections::HashSet;

use mysql_async::prelude::Queryable;

use super::{MigrationReport, StoreError};

/// One migration step: the name it is recorded under and its SQL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub name: &'static str,
    pub sql: &'static str,
}

/// The original's five knex migrations in order; `name` is the knex name without suffix.
pub(crate) const MYSQL_ORIGINAL_STEPS: [Step; 5] = [
    Step {
        name: "2022-12-28-001-initial-migration",
        sql: include_str!("../../migrations/mysql/knex_2022-12-28-001_create_messagebox_and_messages.sql"),
    },
    Step {
        name: "2023-01-17-messages-update",
        sql: include_str!("../../migrations/mysql/knex_2023-01-17_drop_messages_acknowledged.sql"),
    },
    Step {
        name: "2024-03-05-001-messageID-upgrade",
        sql: include_str!(
            "../../migrations/mysql/knex_2024-03-05-001_replace_messages_messageid_with_unique_string.sql"
        ),
    },
    Step {
        name: "2025-01-31-001-notification-permissions",
        sql: include_str!("../../migrations/mysql/knex_2025-01-31-001_create_message_permissions_and_server_fees.sql"),
    },
    Step {
        name: "2025-01-31-002-device-registrations",
        sql: include_str!("../../migrations/mysql/knex_2025-01-31-002_create_device_registrations.sql"),
    },
];

/// Our steps on top of the original schema, recorded in `messagebox_migrations`.
pub(crate) const MYSQL_OWN_STEPS: [Step; 4] = [
    Step {
        name: "0001_index_messages_recipient_box_created_at",
        sql: include_str!("../../migrations/mysql/0001_index_messages_recipient_box_created_at.sql"),
    },
    Step { name: "0002_messages_expires_at", sql: include_str!("../../migrations/mysql/0002_messages_expires_at.sql") },
    Step { name: "0004_payment_replays", sql: include_str!("../../migrations/mysql/0004_payment_replays.sql") },
    Step {
        name: "0005_messagebox_sender_usage",
        sql: include_str!("../../migrations/mysql/0005_messagebox_sender_usage.sql"),
    },
];

const MYSQL_KNEX_TABLES: &str = include_str!("../../migrations/mysql/bookkeeping_knex_tables.sql");
const MYSQL_OWN_TABLE: &str = include_str!("../../migrations/mysql/bookkeeping_messagebox_migrations.sql");

/// The SQLite steps, recorded in `messagebox_migrations`.
pub(crate) const SQLITE_STEPS: [Step; 5] = [
    Step { name: "0001_create_schema", sql: include_str!("../../migrations/sqlite/0001_create_schema.sql") },
    Step {
        name: "0002_index_messages_recipient_box_created_at",
        sql: include_str!("../../migrations/sqlite/0002_index_messages_recipient_box_created_at.sql"),
    },
    Step {
        name: "0003_messages_expires_at",
        sql: include_str!("../../migrations/sqlite/0003_messages_expires_at.sql"),
    },
    Step { name: "0005_payment_replays", sql: include_str!("../../migrations/sqlite/0005_payment_replays.sql") },
    Step {
        name: "0006_messagebox_sender_usage",
        sql: include_str!("../../migrations/sqlite/0006_messagebox_sender_usage.sql"),
    },
];

/// The columns our queries name, per table; anything else in the database is ignored.
const REQUIRED_COLUMNS: [(&str, &[&str]); 7] = [
    ("messageBox", &["messageBoxId", "created_at", "updated_at", "type", "identityKey"]),
    (
        "messages",
        &["created_at", "updated_at", "messageBoxId", "sender", "recipient", "body", "messageId", "expires_at"],
    ),
    ("message_permissions", &["id", "created_at", "updated_at", "recipient", "sender", "message_box", "recipient_fee"]),
    ("server_fees", &["id", "created_at", "updated_at", "message_box", "delivery_fee"]),
    (
        "device_registrations",
        &[
            "id",
            "created_at",
            "updated_at",
            "identity_key",
            "fcm_token",
            "device_id",
            "platform",
            "last_used",
            "active",
        ],
    ),
    ("payment_replays", &["transaction_id", "created_at", "expires_at"]),
    ("messagebox_sender_usage", &["sender", "messages", "bytes"]),
];

/// How long a process waits for another one's migration before giving up.
const LOCK_TIMEOUT_SECS: u32 = 60;

/// When a guarded statement runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Guard {
    Always,
    NoTable(String),
    NoIndex(String, String),
    Index(String, String),
    NoColumn(String, String),
    Column(String, String),
    ColumnType(String, String, String),
    NoForeignKey(String, String),
}

/// One statement of a step file with its guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement {
    pub guard: Guard,
    pub sql: String,
}

/// Splits a step file into statements (each ends with `;` at the end of a line) and reads
/// their guards. Plain `--` comment lines are dropped.
pub(crate) fn parse(sql: &str) -> Result<Vec<Statement>, StoreError> {
    let mut out = Vec::new();
    let mut guard = Guard::Always;
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if current.is_empty() {
            if let Some(spec) = trimmed.strip_prefix("-- guard:") {
                guard = parse_guard(spec)?;
                continue;
            }
            if trimmed.is_empty() || trimmed.starts_with("--") {
                continue;
            }
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(line);
        if trimmed.ends_with(';') {
            let stmt = current.trim().trim_end_matches(';').trim().to_string();
            out.push(Statement { guard: std::mem::replace(&mut guard, Guard::Always), sql: stmt });
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        return Err(StoreError::Schema(format!("migration SQL ends without ';': {}", current.trim())));
    }
    Ok(out)
}

fn parse_guard(spec: &str) -> Result<Guard, StoreError> {
    let words: Vec<String> = spec.split_whitespace().map(str::to_string).collect();
    let w = |i: usize| words[i].clone();
    Ok(match (words.first().map(String::as_str), words.len()) {
        (Some("no-table"), 2) => Guard::NoTable(w(1)),
        (Some("no-index"), 3) => Guard::NoIndex(w(1), w(2)),
        (Some("index"), 3) => Guard::Index(w(1), w(2)),
        (Some("no-column"), 3) => Guard::NoColumn(w(1), w(2)),
        (Some("column"), 3) => Guard::Column(w(1), w(2)),
        (Some("column-type"), 4) => Guard::ColumnType(w(1), w(2), w(3)),
        (Some("no-foreign-key"), 3) => Guard::NoForeignKey(w(1), w(2)),
        _ => return Err(StoreError::Schema(format!("unknown migration guard: {}", spec.trim()))),
    })
}

/// `2023-01-17-messages-update.js` → `2023-01-17-messages-update` (knex records the file
/// name; deployments that ran the TypeScript sources directly recorded `.ts`).
pub(crate) fn knex_basename(name: &str) -> &str {
    name.strip_suffix(".js").or_else(|| name.strip_suffix(".ts")).unwrap_or(name)
}

/// A user-level lock name per database (`GET_LOCK` names are server-wide, ≤ 64 chars).
fn lock_name(db: &str) -> String {
    let mut name = format!("messagebox_migrate:{db}");
    while name.len() > 64 {
        name.pop();
    }
    name
}

/// Runs the MySQL migrations on `conn`, a connection of its own: the migration lock belongs
/// to the connection, and dropping it (the caller disconnects) always releases the lock.
pub(crate) async fn run_mysql(conn: &mut mysql_async::Conn) -> Result<MigrationReport, StoreError> {
    let db: Option<Option<String>> = conn.query_first("SELECT DATABASE()").await.map_err(StoreError::from)?;
    let Some(Some(db)) = db else {
        return Err(StoreError::Config("the MySQL URL names no database".into()));
    };
    let lock = lock_name(&db);
    let got: Option<Option<i64>> =
        conn.exec_first("SELECT GET_LOCK(?, ?)", (lock.as_str(), LOCK_TIMEOUT_SECS)).await.map_err(StoreError::from)?;
    if got != Some(Some(1)) {
        return Err(StoreError::Schema(format!(
            "another process held the migration lock `{lock}` for more than {LOCK_TIMEOUT_SECS}s"
        )));
    }
    let result = migrate_mysql_locked(conn, &db).await;
    if let Err(e) = conn.exec_drop("SELECT RELEASE_LOCK(?)", (lock.as_str(),)).await {
        tracing::warn!(error = %e, "could not release the migration lock (it goes with the connection)");
    }
    result
}

async fn migrate_mysql_locked(conn: &mut mysql_async::Conn, db: &str) -> Result<MigrationReport, StoreError> {
    let recorded: Vec<String> = if table_exists(conn, "knex_migrations").await? {
        conn.query::<Option<String>, _>("SELECT `name` FROM `knex_migrations`")
            .await
            .map_err(StoreError::from)?
            .into_iter()
            .flatten()
            .collect()
    } else {
        Vec::new()
    };
    let recorded: HashSet<&str> = recorded.iter().map(|n| knex_basename(n)).collect();
    let pending: Vec<&Step> = MYSQL_ORIGINAL_STEPS.iter().filter(|s| !recorded.contains(s.name)).collect();
    let mut report = MigrationReport { adopted_existing: pending.is_empty(), applied: Vec::new() };

    if pending.is_empty() {
        tracing::info!(database = db, "adopting the original server's schema (knex_migrations lists all five steps)");
    } else {
        if !recorded.is_empty() {
            tracing::info!(
                database = db,
                missing = ?pending.iter().map(|s| s.name).collect::<Vec<_>>(),
                "completing a partially migrated original schema"
            );
        }
        run_guarded(conn, MYSQL_KNEX_TABLES).await?;
        let batch: Option<i64> = conn
            .query_first("SELECT CAST(COALESCE(MAX(`batch`), 0) + 1 AS SIGNED) FROM `knex_migrations`")
            .await
            .map_err(StoreError::from)?;
        let batch = batch.unwrap_or(1);
        for step in pending {
            run_guarded(conn, step.sql).await?;
            let name = format!("{}.js", step.name);
            conn.exec_drop(
                "INSERT INTO `knex_migrations` (`name`, `batch`, `migration_time`) VALUES (?, ?, ?)",
                (name.as_str(), batch, super::mysql::date_value(super::now())),
            )
            .await
            .map_err(StoreError::from)?;
            tracing::info!(database = db, step = %name, batch, "applied original migration step");
            report.applied.push(name);
        }
    }

    run_guarded(conn, MYSQL_OWN_TABLE).await?;
    let own: HashSet<String> = conn
        .query::<String, _>("SELECT `name` FROM `messagebox_migrations`")
        .await
        .map_err(StoreError::from)?
        .into_iter()
        .collect();
    for step in MYSQL_OWN_STEPS.iter().filter(|s| !own.contains(s.name)) {
        run_guarded(conn, step.sql).await?;
        conn.exec_drop(
            "INSERT INTO `messagebox_migrations` (`name`, `applied_at`) VALUES (?, ?)",
            (step.name, super::mysql::date_value(super::now())),
        )
        .await
        .map_err(StoreError::from)?;
        tracing::info!(database = db, step = step.name, "applied migration step");
        report.applied.push(step.name.to_string());
    }

    verify_mysql(conn).await?;
    Ok(report)
}

async fn run_guarded(conn: &mut mysql_async::Conn, sql: &str) -> Result<(), StoreError> {
    for stmt in parse(sql)? {
        if guard_allows(conn, &stmt.guard).await? {
            tracing::debug!(sql = %stmt.sql, "migration statement");
            conn.query_drop(stmt.sql.as_str()).await.map_err(StoreError::from)?;
        }
    }
    Ok(())
}

async fn count(conn: &mut mysql_async::Conn, sql: &str, params: Vec<&str>) -> Result<i64, StoreError> {
    let params: Vec<mysql_async::Value> = params.into_iter().map(mysql_async::Value::from).collect();
    let n: Option<i64> = conn.exec_first(sql, params).await.map_err(StoreError::from)?;
    Ok(n.unwrap_or(0))
}

async fn table_exists(conn: &mut mysql_async::Conn, table: &str) -> Result<bool, StoreError> {
    let sql = "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?";
    Ok(count(conn, sql, vec![table]).await? > 0)
}

async fn index_exists(conn: &mut mysql_async::Conn, table: &str, index: &str) -> Result<bool, StoreError> {
    let sql = "SELECT COUNT(*) FROM information_schema.STATISTICS \
               WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = ?";
    Ok(count(conn, sql, vec![table, index]).await? > 0)
}

async fn column_count(
    conn: &mut mysql_async::Conn,
    table: &str,
    column: &str,
    ty: Option<&str>,
) -> Result<i64, StoreError> {
    match ty {
        None => {
            let sql = "SELECT COUNT(*) FROM information_schema.COLUMNS \
                       WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?";
            count(conn, sql, vec![table, column]).await
        }
        Some(ty) => {
            let sql = "SELECT COUNT(*) FROM information_schema.COLUMNS \
                       WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ? AND DATA_TYPE = ?";
            count(conn, sql, vec![table, column, ty]).await
        }
    }
}

async fn guard_allows(conn: &mut mysql_async::Conn, guard: &Guard) -> Result<bool, StoreError> {
    Ok(match guard {
        Guard::Always => true,
        Guard::NoTable(t) => !table_exists(conn, t).await?,
        Guard::NoIndex(t, i) => !index_exists(conn, t, i).await?,
        Guard::Index(t, i) => index_exists(conn, t, i).await?,
        Guard::NoColumn(t, c) => column_count(conn, t, c, None).await? == 0,
        Guard::Column(t, c) => column_count(conn, t, c, None).await? > 0,
        Guard::ColumnType(t, c, ty) => column_count(conn, t, c, Some(ty)).await? > 0,
        Guard::NoForeignKey(t, n) => {
            let sql = "SELECT COUNT(*) FROM information_schema.TABLE_CONSTRAINTS WHERE TABLE_SCHEMA = DATABASE() \
                       AND TABLE_NAME = ? AND CONSTRAINT_NAME = ? AND CONSTRAINT_TYPE = 'FOREIGN KEY'";
            count(conn, sql, vec![t, n]).await? == 0
        }
    })
}

/// Fails with `Schema` when a column our queries name is missing (a database whose
/// `knex_migrations` claims more than its tables hold).
async fn verify_mysql(conn: &mut mysql_async::Conn) -> Result<(), StoreError> {
    let rows: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN \
             ('messageBox', 'messages', 'message_permissions', 'server_fees', 'device_registrations', 'payment_replays', \
             'messagebox_sender_usage')",
        )
        .await
        .map_err(StoreError::from)?;
    let present: HashSet<(String, String)> =
        rows.into_iter().map(|(t, c)| (t.to_lowercase(), c.to_lowercase())).collect();
    check_required(|t, c| present.contains(&(t.to_lowercase(), c.to_lowercase())))
}

fn check_required(has: impl Fn(&str, &str) -> bool) -> Result<(), StoreError> {
    let missing: Vec<String> = REQUIRED_COLUMNS
        .iter()
        .flat_map(|(t, cols)| cols.iter().map(move |c| (*t, *c)))
        .filter(|(t, c)| !has(t, c))
        .map(|(t, c)| format!("{t}.{c}"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Schema(format!("the database lacks columns the server needs: {}", missing.join(", "))))
    }
}

/// Runs the SQLite migrations in one immediate transaction (DDL is transactional there).
pub(crate) fn run_sqlite(conn: &mut rusqlite::Connection) -> Result<MigrationReport, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(StoreError::from)?;
    tx.execute_batch(
        "create table if not exists messagebox_migrations (name text not null primary key, applied_at integer not null)",
    )
    .map_err(StoreError::from)?;
    let recorded: HashSet<String> = {
        let mut stmt = tx.prepare("select name from messagebox_migrations").map_err(StoreError::from)?;
        let names = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(StoreError::from)?;
        names.collect::<Result<_, _>>().map_err(StoreError::from)?
    };
    let mut report = MigrationReport::default();
    for step in SQLITE_STEPS.iter().filter(|s| !recorded.contains(s.name)) {
        tx.execute_batch(step.sql).map_err(StoreError::from)?;
        tx.execute("insert into messagebox_migrations (name, applied_at) values (?1, ?2)", (step.name, super::now()))
            .map_err(StoreError::from)?;
        tracing::info!(step = step.name, "applied SQLite migration step");
        report.applied.push(step.name.to_string());
    }
    let mut present = HashSet::new();
    for (table, _) in REQUIRED_COLUMNS {
        let mut stmt = tx.prepare("select name from pragma_table_info(?1)").map_err(StoreError::from)?;
        let cols = stmt.query_map([table], |r| r.get::<_, String>(0)).map_err(StoreError::from)?;
        for c in cols {
            present.insert((table.to_lowercase(), c.map_err(StoreError::from)?.to_lowercase()));
        }
    }
    check_required(|t, c| present.contains(&(t.to_lowercase(), c.to_lowercase())))?;
    tx.commit().map_err(StoreError::from)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_step_parses() {
        let files = MYSQL_ORIGINAL_STEPS
            .iter()
            .chain(MYSQL_OWN_STEPS.iter())
            .map(|s| s.sql)
            .chain([MYSQL_KNEX_TABLES, MYSQL_OWN_TABLE]);
        for sql in files {
            let stmts = parse(sql).unwrap();
            assert!(!stmts.is_empty());
            for s in &stmts {
                assert!(!s.sql.contains("-- guard"), "{}", s.sql);
                assert!(!s.sql.ends_with(';'));
            }
        }
        for step in SQLITE_STEPS {
            assert!(!parse(step.sql).unwrap().is_empty());
        }
    }

    #[test]
    fn guards_attach_to_the_next_statement() {
        let stmts = parse(MYSQL_ORIGINAL_STEPS[2].sql).unwrap();
        assert_eq!(stmts.len(), 3);
        assert_eq!(stmts[0].guard, Guard::ColumnType("messages".into(), "messageId".into(), "int".into()));
        assert_eq!(stmts[0].sql, "alter table `messages` drop `messageId`");
        assert_eq!(stmts[1].guard, Guard::NoColumn("messages".into(), "messageId".into()));
        assert_eq!(stmts[2].guard, Guard::NoIndex("messages".into(), "messages_messageid_unique".into()));
        let seeds = parse(MYSQL_ORIGINAL_STEPS[3].sql).unwrap();
        assert_eq!(seeds.iter().filter(|s| s.guard == Guard::Always).count(), 3);
    }

    #[test]
    fn parse_rejects_unknown_guards_and_unterminated_sql() {
        assert!(parse("-- guard: sometimes x\nselect 1;").is_err());
        assert!(parse("select 1").is_err());
        let multi = parse("-- c\ncreate table t (\n  a int\n);\n\nselect 2;").unwrap();
        assert_eq!(multi.len(), 2);
        assert_eq!(multi[0].sql, "create table t (\n  a int\n)");
    }

    #[test]
    fn knex_names_compare_by_basename() {
        assert_eq!(knex_basename("2023-01-17-messages-update.js"), "2023-01-17-messages-update");
        assert_eq!(knex_basename("2023-01-17-messages-update.ts"), "2023-01-17-messages-update");
        assert_eq!(knex_basename("2026-01-01-upstream-extra"), "2026-01-01-upstream-extra");
    }

    #[test]
    fn lock_names_fit_mysql_limits() {
        assert_eq!(lock_name("mb"), "messagebox_migrate:mb");
        assert_eq!(lock_name(&"x".repeat(64)).len(), 64);
    }

    #[test]
    fn sqlite_schema_migrates_twice() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        let first = run_sqlite(&mut conn).unwrap();
        assert_eq!(
            first.applied,
            [
                "0001_create_schema",
                "0002_index_messages_recipient_box_created_at",
                "0003_messages_expires_at",
                "0005_payment_replays",
                "0006_messagebox_sender_usage"
            ]
        );
        let second = run_sqlite(&mut conn).unwrap();
        assert!(second.applied.is_empty());
        let fees: i64 = conn.query_row("select count(*) from server_fees", [], |r| r.get(0)).unwrap();
        assert_eq!(fees, 3);
    }
}
