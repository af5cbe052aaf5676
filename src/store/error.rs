//! The store's error type and what a caller may do about one: [`StoreError::class`] sorts
//! every failure into retry / unavailable / bad request / internal, from the database's own
//! error number (kept in [`DatabaseError::code`]) where there is one.

/// A failed store operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error or the connection failed.
    #[error("database error: {0}")]
    Database(DatabaseError),
    /// The store is shutting down or its worker is gone.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Invalid configuration (bad URL, unreadable file).
    #[error("store configuration: {0}")]
    Config(String),
    /// The database has a schema we cannot work with.
    #[error("schema: {0}")]
    Schema(String),
}

/// An error from the database or its driver: the driver's message, and the number the
/// engine gave it, if any.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DatabaseError {
    /// `None` for failures that carry no number (a malformed value, a driver limit).
    pub code: Option<ErrorCode>,
    pub message: String,
}

/// Where a database error's number comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// A MySQL/MariaDB error number: the server's `ER_…` (1000–1999, 3000+) or the client's
    /// `CR_…` (2000–2999).
    Mysql(u16),
    /// An SQLite extended result code (its low byte is the primary code).
    Sqlite(i32),
    /// The driver could not reach the server, lost the connection or has closed its pool;
    /// it reports these without a number.
    Disconnected,
}

/// What a caller can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A transient conflict with another transaction (deadlock, lock wait timeout): the
    /// same operation may succeed if run again.
    Retry,
    /// The database cannot be reached or is too busy, or the store is shutting down: try
    /// later (or elsewhere); the request itself is fine.
    Unavailable,
    /// The request's data cannot be stored as given (too long, out of range, constraint):
    /// running it again will fail again.
    BadRequest,
    /// Anything else: a bug, a configuration or schema problem.
    Internal,
}

impl StoreError {
    /// What a caller can do about this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::Database(e) => e.class(),
            StoreError::Unavailable(_) => ErrorClass::Unavailable,
            StoreError::Config(_) | StoreError::Schema(_) => ErrorClass::Internal,
        }
    }

    /// A database error without a number (a malformed value, an impossible state).
    pub(crate) fn database(message: impl Into<String>) -> Self {
        StoreError::Database(DatabaseError { code: None, message: message.into() })
    }
}

impl DatabaseError {
    pub fn class(&self) -> ErrorClass {
        self.code.map_or(ErrorClass::Internal, ErrorCode::class)
    }
}

impl ErrorCode {
    pub fn class(self) -> ErrorClass {
        match self {
            ErrorCode::Mysql(n) => mysql_class(n),
            ErrorCode::Sqlite(n) => sqlite_class(n),
            ErrorCode::Disconnected => ErrorClass::Unavailable,
        }
    }
}

/// MySQL/MariaDB error numbers (`ER_…` from the server, `CR_…` from a client library).
pub(crate) mod mysql_codes {
    pub const ER_CON_COUNT_ERROR: u16 = 1040;
    pub const ER_DUP_ENTRY: u16 = 1062;
    pub const ER_BAD_NULL_ERROR: u16 = 1048;
    pub const ER_SERVER_SHUTDOWN: u16 = 1053;
    pub const ER_NET_READ_ERROR: u16 = 1158;
    pub const ER_NET_WRITE_INTERRUPTED: u16 = 1161;
    pub const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
    pub const ER_LOCK_DEADLOCK: u16 = 1213;
    pub const ER_NO_REFERENCED_ROW: u16 = 1216;
    pub const ER_WARN_DATA_OUT_OF_RANGE: u16 = 1264;
    pub const WARN_DATA_TRUNCATED: u16 = 1265;
    pub const ER_TRUNCATED_WRONG_VALUE: u16 = 1292;
    pub const ER_INVALID_CHARACTER_STRING: u16 = 1300;
    pub const ER_TRUNCATED_WRONG_VALUE_FOR_FIELD: u16 = 1366;
    pub const ER_DATA_TOO_LONG: u16 = 1406;
    pub const ER_NO_REFERENCED_ROW_2: u16 = 1452;
    /// InnoDB reports a deadlock on a table's AUTO-INC lock (taken by `INSERT … SELECT`)
    /// this way: "Failed to read auto-increment value from storage engine".
    pub const ER_AUTOINC_READ_FAILED: u16 = 1467;
    /// MariaDB: "Connection was killed".
    pub const ER_CONNECTION_KILLED: u16 = 1927;
    pub const CR_CONNECTION_ERROR: u16 = 2002;
    pub const CR_CONN_HOST_ERROR: u16 = 2003;
    pub const CR_SERVER_GONE_ERROR: u16 = 2006;
    pub const CR_SERVER_LOST: u16 = 2013;
    /// MySQL 8: the server closed an idle connection.
    pub const ER_CLIENT_INTERACTION_TIMEOUT: u16 = 4031;
}

fn mysql_class(code: u16) -> ErrorClass {
    use mysql_codes::*;
    match code {
        ER_LOCK_WAIT_TIMEOUT | ER_LOCK_DEADLOCK | ER_AUTOINC_READ_FAILED => ErrorClass::Retry,
        ER_CON_COUNT_ERROR
        | ER_SERVER_SHUTDOWN
        | ER_NET_READ_ERROR..=ER_NET_WRITE_INTERRUPTED
        | ER_CONNECTION_KILLED
        | CR_CONNECTION_ERROR
        | CR_CONN_HOST_ERROR
        | CR_SERVER_GONE_ERROR
        | CR_SERVER_LOST
        | ER_CLIENT_INTERACTION_TIMEOUT => ErrorClass::Unavailable,
        ER_BAD_NULL_ERROR
        | ER_DUP_ENTRY
        | ER_WARN_DATA_OUT_OF_RANGE
        | WARN_DATA_TRUNCATED
        | ER_TRUNCATED_WRONG_VALUE
        | ER_INVALID_CHARACTER_STRING
        | ER_TRUNCATED_WRONG_VALUE_FOR_FIELD
        | ER_DATA_TOO_LONG => ErrorClass::BadRequest,
        _ => ErrorClass::Internal,
    }
}

fn sqlite_class(extended: i32) -> ErrorClass {
    use rusqlite::ffi;
    match extended & 0xff {
        ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED | ffi::SQLITE_IOERR | ffi::SQLITE_FULL | ffi::SQLITE_CANTOPEN => {
            ErrorClass::Unavailable
        }
        // A foreign key failure means our own bookkeeping is off, not the caller's data.
        ffi::SQLITE_CONSTRAINT if extended == ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorClass::Internal,
        ffi::SQLITE_CONSTRAINT | ffi::SQLITE_TOOBIG | ffi::SQLITE_MISMATCH => ErrorClass::BadRequest,
        _ => ErrorClass::Internal,
    }
}

impl From<mysql_async::Error> for StoreError {
    fn from(e: mysql_async::Error) -> Self {
        use mysql_async::{DriverError, Error};
        let code = match &e {
            Error::Server(s) => Some(ErrorCode::Mysql(s.code)),
            Error::Io(_) | Error::Driver(DriverError::ConnectionClosed | DriverError::PoolDisconnected) => {
                Some(ErrorCode::Disconnected)
            }
            _ => None,
        };
        StoreError::Database(DatabaseError { code, message: e.to_string() })
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        let code = match &e {
            rusqlite::Error::SqliteFailure(f, _) => Some(ErrorCode::Sqlite(f.extended_code)),
            _ => None,
        };
        StoreError::Database(DatabaseError { code, message: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    fn mysql(code: u16) -> ErrorClass {
        ErrorCode::Mysql(code).class()
    }

    #[test]
    fn mysql_numbers() {
        for retry in [1205, 1213, 1467] {
            assert_eq!(mysql(retry), ErrorClass::Retry, "{retry}");
        }
        for unavailable in [1040, 1053, 1158, 1159, 1160, 1161, 1927, 2002, 2003, 2006, 2013, 4031] {
            assert_eq!(mysql(unavailable), ErrorClass::Unavailable, "{unavailable}");
        }
        for bad in [1048, 1062, 1264, 1265, 1292, 1300, 1366, 1406] {
            assert_eq!(mysql(bad), ErrorClass::BadRequest, "{bad}");
        }
        // Syntax error, unknown table, access denied, foreign key: ours to fix.
        for internal in [1064, 1146, 1045, 1216, 1452] {
            assert_eq!(mysql(internal), ErrorClass::Internal, "{internal}");
        }
    }

    #[test]
    fn sqlite_codes() {
        let cases = [
            (ffi::SQLITE_BUSY, ErrorClass::Unavailable),
            (ffi::SQLITE_BUSY_SNAPSHOT, ErrorClass::Unavailable),
            (ffi::SQLITE_LOCKED, ErrorClass::Unavailable),
            (ffi::SQLITE_LOCKED_SHAREDCACHE, ErrorClass::Unavailable),
            (ffi::SQLITE_IOERR_WRITE, ErrorClass::Unavailable),
            (ffi::SQLITE_FULL, ErrorClass::Unavailable),
            (ffi::SQLITE_CANTOPEN, ErrorClass::Unavailable),
            (ffi::SQLITE_TOOBIG, ErrorClass::BadRequest),
            (ffi::SQLITE_CONSTRAINT_UNIQUE, ErrorClass::BadRequest),
            (ffi::SQLITE_CONSTRAINT_NOTNULL, ErrorClass::BadRequest),
            (ffi::SQLITE_MISMATCH, ErrorClass::BadRequest),
            (ffi::SQLITE_CONSTRAINT_FOREIGNKEY, ErrorClass::Internal),
            (ffi::SQLITE_ERROR, ErrorClass::Internal),
            (ffi::SQLITE_CORRUPT, ErrorClass::Internal),
        ];
        for (code, class) in cases {
            assert_eq!(ErrorCode::Sqlite(code).class(), class, "{code}");
        }
    }

    #[test]
    fn driver_errors_keep_their_numbers() {
        let server = mysql_async::Error::Server(mysql_async::ServerError {
            code: 1406,
            message: "Data too long for column 'body' at row 1".into(),
            state: "22001".into(),
        });
        let e = StoreError::from(server);
        assert!(matches!(&e, StoreError::Database(DatabaseError { code: Some(ErrorCode::Mysql(1406)), .. })));
        assert_eq!(e.class(), ErrorClass::BadRequest);
        assert_eq!(
            e.to_string(),
            "database error: Server error: `ERROR 1406 (22001): Data too long for column 'body' at row 1'"
        );

        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = StoreError::from(mysql_async::Error::Io(mysql_async::IoError::Io(refused)));
        assert_eq!(e.class(), ErrorClass::Unavailable);
        let closed = mysql_async::Error::Driver(mysql_async::DriverError::PoolDisconnected);
        assert_eq!(StoreError::from(closed).class(), ErrorClass::Unavailable);
        let mismatch = mysql_async::Error::Driver(mysql_async::DriverError::MixedParams);
        assert_eq!(StoreError::from(mismatch).class(), ErrorClass::Internal);

        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY); INSERT INTO t VALUES ('a');").unwrap();
        let e = StoreError::from(conn.execute("INSERT INTO t VALUES ('a')", []).unwrap_err());
        assert!(matches!(&e, StoreError::Database(DatabaseError { code: Some(ErrorCode::Sqlite(c)), .. })
            if *c == ffi::SQLITE_CONSTRAINT_PRIMARYKEY));
        assert_eq!(e.class(), ErrorClass::BadRequest);
        let e = StoreError::from(conn.execute("SELECT * FROM missing", []).unwrap_err());
        assert_eq!(e.class(), ErrorClass::Internal);
        assert!(e.to_string().starts_with("database error: no such table: missing"), "{e}");
    }

    #[test]
    fn other_errors() {
        assert_eq!(StoreError::Unavailable("stopped".into()).class(), ErrorClass::Unavailable);
        assert_eq!(StoreError::Config("bad URL".into()).class(), ErrorClass::Internal);
        assert_eq!(StoreError::Schema("missing".into()).class(), ErrorClass::Internal);
        let e = StoreError::database("unexpected NULL");
        assert_eq!((e.class(), e.to_string()), (ErrorClass::Internal, "database error: unexpected NULL".into()));
    }
}
