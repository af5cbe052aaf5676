//! `messagebox fees list|set` as operators run it, a child process on the database a running
//! server uses (an SQLite file, MySQL): the fee it sets is the delivery fee the server quotes
//! next, without a restart; bad arguments exit 2 and database failures 1, with one line each.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Kind, TestDb, TestServer};
use messagebox::client::AuthClient;

use common::process::BIN;

/// `messagebox <args>` with a clean environment plus `env`, in an empty directory (no `.env`).
fn messagebox(env: &[(&str, &str)], args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(BIN);
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).current_dir(dir.path()).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the binary runs")
}

/// The same from async code, off the runtime's threads.
async fn fees(database_url: &str, args: &[&str]) -> Output {
    let url = database_url.to_string();
    let args: Vec<String> = std::iter::once("fees").chain(args.iter().copied()).map(String::from).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        messagebox(&[("DATABASE_URL", &url)], &args)
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("UTF-8 output")
}

/// Asserts a successful run with nothing on stderr; its stdout.
#[track_caller]
fn succeeded(out: &Output) -> &str {
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stderr), "", "nothing on stderr");
    text(&out.stdout)
}

/// The delivery fee `/permissions/quote` names for one recipient of `message_box`.
async fn quoted(client: &mut AuthClient, recipient: &str, message_box: &str) -> i64 {
    let (status, v) =
        client.get_json(&format!("/permissions/quote?recipient={recipient}&messageBox={message_box}")).await.unwrap();
    assert_eq!(status, 200, "{v}");
    v["quote"]["deliveryFee"].as_i64().unwrap_or_else(|| panic!("no deliveryFee in {v}"))
}

/// Asserts the server quotes `fee` at once: `fees set` returns only once no running server
/// charges the old fee (`store::fee_cache`).
async fn quotes_now(client: &mut AuthClient, recipient: &str, message_box: &str, fee: i64) {
    assert_eq!(quoted(client, recipient, message_box).await, fee, "{message_box}: the first quote after `fees set`");
}

async fn a_running_server_charges_the_fee_set(kind: Kind) {
    let Some(db) = TestDb::new(kind) else { return };
    let server = TestServer::start(&db.url, &[]).await;
    let mut client = server.client();
    let recipient = common::key();

    // An existing box: the seeded 10 satoshis, then 25.
    assert_eq!(quoted(&mut client, &recipient, "notifications").await, 10);
    let out = fees(&db.url, &["set", "notifications", "25"]).await;
    assert_eq!(succeeded(&out), "notifications: 10 -> 25 satoshis\n");
    quotes_now(&mut client, &recipient, "notifications", 25).await;

    // A box without a row is free until it gets one.
    assert_eq!(quoted(&mut client, &recipient, "alerts").await, 0);
    let out = fees(&db.url, &["set", "alerts", "4"]).await;
    assert_eq!(succeeded(&out), "alerts: new box, 4 satoshis\n");
    quotes_now(&mut client, &recipient, "alerts", 4).await;

    // Back to free, and the column's largest value.
    let out = fees(&db.url, &["set", "notifications", "0"]).await;
    assert_eq!(succeeded(&out), "notifications: 25 -> 0 satoshis\n");
    quotes_now(&mut client, &recipient, "notifications", 0).await;
    let out = fees(&db.url, &["set", "payment_inbox", "2147483647"]).await;
    assert_eq!(succeeded(&out), "payment_inbox: 0 -> 2147483647 satoshis\n");
    quotes_now(&mut client, &recipient, "payment_inbox", 2_147_483_647).await;

    // The list: a header, then one aligned row per box, sorted, no colours.
    let out = fees(&db.url, &["list"]).await;
    let list = succeeded(&out);
    assert!(!list.contains('\x1b'), "no ANSI: {list:?}");
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].starts_with("MESSAGE BOX") && lines[0].contains("DELIVERY FEE (satoshis)"), "{list}");
    let rows: Vec<(&str, &str)> = lines[1..]
        .iter()
        .map(|l| {
            let mut fields = l.split_whitespace();
            (fields.next().unwrap(), fields.next().unwrap())
        })
        .collect();
    assert_eq!(
        rows,
        [("alerts", "4"), ("inbox", "0"), ("notifications", "0"), ("payment_inbox", "2147483647")],
        "{list}"
    );
    let fee_column = lines[0].find("DELIVERY FEE").unwrap();
    for line in &lines[1..] {
        let fee_start = line[fee_column..].chars().next().unwrap();
        assert!(fee_start.is_ascii_digit() && line.as_bytes()[fee_column - 1] == b' ', "aligned: {list}");
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_charges_the_fee_set_sqlite_file() {
    a_running_server_charges_the_fee_set(Kind::SqliteFile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_charges_the_fee_set_mysql() {
    a_running_server_charges_the_fee_set(Kind::Mysql).await;
}

#[test]
fn bad_arguments_exit_2_with_one_line_and_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("untouched.sqlite3");
    let url = format!("sqlite://{}", file.display());
    let long = "b".repeat(256);
    for (args, says) in [
        (vec!["fees", "set", "x", "-1"], "satoshis must be a whole number from 0 to 2147483647, got \"-1\""),
        (vec!["fees", "set", "x", "abc"], "satoshis must be a whole number from 0 to 2147483647, got \"abc\""),
        (vec!["fees", "set", "x", "2147483648"], "got \"2147483648\""),
        (vec!["fees", "set", "x", "1.5"], "got \"1.5\""),
        (vec!["fees", "set", "", "5"], "the message box name is empty"),
        (vec!["fees", "set", " x", "5"], "starts or ends with whitespace"),
        (vec!["fees", "set", long.as_str(), "5"], "256 characters long; at most 255"),
    ] {
        let out = messagebox(&[("DATABASE_URL", &url)], &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("messagebox: fees set: ") && err.contains(says), "{args:?}: {err}");
        assert_eq!(text(&out.stdout), "", "{args:?}");
    }
    assert!(!file.exists(), "no database was opened for a bad argument");
    // Usage errors are clap's own, with the same code.
    for args in [vec!["fees", "set", "x"], vec!["fees", "frob"], vec!["fees"]] {
        let out = messagebox(&[("DATABASE_URL", &url)], &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    assert!(!file.exists());
}

#[test]
fn help_names_the_commands() {
    let help = messagebox(&[], &["--help"]);
    assert!(text(&help.stdout).contains("fees"), "{}", text(&help.stdout));
    let help = messagebox(&[], &["fees", "--help"]);
    let help = text(&help.stdout);
    assert!(help.contains("list") && help.contains("set"), "{help}");
    let help = messagebox(&[], &["fees", "set", "--help"]);
    let help = text(&help.stdout);
    assert!(help.contains("<BOX>") && help.contains("<SATOSHIS>") && help.contains("2147483647"), "{help}");
}

#[test]
fn an_unopenable_sqlite_file_exits_1_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("no/such/dir/fees.sqlite3").display());
    let start = Instant::now();
    let out = messagebox(&[("DATABASE_URL", &url)], &["fees", "list"]);
    assert!(start.elapsed() < Duration::from_secs(5), "a permanent error is not retried");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("messagebox: cannot open the database"), "{err}");
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn a_wrong_mysql_password_exits_1_fast_with_one_line() {
    let Some(db) = TestDb::new(Kind::Mysql) else { return };
    let user = format!("f_{}", db.name);
    let sql = |statement: String| {
        let url = db.url.clone();
        common::run_isolated(move || async move {
            use mysql_async::prelude::Queryable;
            let mut c = mysql_async::Conn::from_url(url).await.unwrap();
            c.query_drop(statement).await.unwrap();
            c.disconnect().await.unwrap();
        })
    };
    sql(format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'right-password'; GRANT ALL ON `{}`.* TO '{user}'@'%'",
        db.name
    ));
    let (scheme_end, at) = (db.url.find("://").unwrap() + 3, db.url.rfind('@').unwrap());
    let wrong = format!("{}{user}:wrong-password{}", &db.url[..scheme_end], &db.url[at..]);
    let start = Instant::now();
    let list = messagebox(&[("DATABASE_URL", &wrong)], &["fees", "list"]);
    let set = messagebox(&[("DATABASE_URL", &wrong)], &["fees", "set", "inbox", "5"]);
    let took = start.elapsed();
    sql(format!("DROP USER '{user}'@'%'"));
    assert!(took < Duration::from_secs(10), "both runs took {took:?}");
    for out in [list, set] {
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains("cannot open the database") && err.contains("Access denied"), "{err}");
        assert!(!err.contains("wrong-password"), "the password is not printed: {err}");
        assert_eq!(text(&out.stdout), "");
    }
}
