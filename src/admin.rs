//! Operator commands beyond serving: the server's delivery fee per box (`server_fees`), which
//! operators otherwise change with raw SQL (`messagebox fees list|set`). Arguments are checked
//! here before any database is opened; `main` owns the configuration, the store and the exit
//! codes. A running server needs no restart: it caches a box's delivery fee for at most
//! [`DELIVERY_FEE_MAX_AGE`](crate::store::fee_cache::DELIVERY_FEE_MAX_AGE), and `fees set`
//! reports success only once that has passed since its commit, so from then on no running
//! server charges the old fee.

use std::borrow::Cow;
use std::fmt;

use crate::domain::js;
use crate::store::fee_cache::DELIVERY_FEE_SETTLES;
use crate::store::{iso8601, ServerFee, Store, StoreError};

/// The most characters `server_fees.message_box` (a `varchar(255)`) holds.
pub const MAX_BOX_CHARS: usize = 255;

/// A `messagebox fees` argument that cannot be used; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeeArgError {
    #[error("the message box name is empty")]
    EmptyBox,
    /// The send path trims box names before it looks their fee up, so a padded name would
    /// be a row no send is ever charged by.
    #[error("the message box name {0:?} starts or ends with whitespace (senders' box names are trimmed)")]
    PaddedBox(String),
    #[error("the message box name is {0} characters long; at most {MAX_BOX_CHARS} fit")]
    BoxTooLong(usize),
    #[error("satoshis must be a whole number from 0 to {max}, got {0:?}", max = i32::MAX)]
    BadSatoshis(String),
}

/// What `messagebox fees` was asked to do, with checked arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeesCommand {
    /// Print every box's delivery fee.
    List,
    /// Insert or update one box's delivery fee.
    Set { message_box: String, fee: i32 },
}

impl FeesCommand {
    /// `fees set <box> <satoshis>` as typed: the box non-blank, unpadded and at most
    /// [`MAX_BOX_CHARS`] characters; satoshis decimal digits only, at most `i32::MAX` (the
    /// column is a signed 32-bit `int`, and a negative delivery fee means nothing).
    pub fn set(message_box: &str, satoshis: &str) -> Result<FeesCommand, FeeArgError> {
        if js::is_blank(message_box) {
            return Err(FeeArgError::EmptyBox);
        }
        if js::trim(message_box) != message_box {
            return Err(FeeArgError::PaddedBox(message_box.to_string()));
        }
        let chars = message_box.chars().count();
        if chars > MAX_BOX_CHARS {
            return Err(FeeArgError::BoxTooLong(chars));
        }
        // Digits only: `str::parse` would also take `+5`, and `-0` is not a fee anyone means.
        let fee = Some(satoshis)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<i32>().ok())
            .ok_or_else(|| FeeArgError::BadSatoshis(satoshis.to_string()))?;
        Ok(FeesCommand::Set { message_box: message_box.to_string(), fee })
    }

    /// `list` or `set`, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            FeesCommand::List => "list",
            FeesCommand::Set { .. } => "set",
        }
    }

    /// Runs the command; the text to print on stdout (whole lines). `set` returns
    /// [`DELIVERY_FEE_SETTLES`] after its commit, when every running server's cached fee of the
    /// box has expired.
    pub async fn run(&self, store: &Store) -> Result<String, StoreError> {
        match self {
            FeesCommand::List => Ok(fee_table(&store.server_fees().await?)),
            FeesCommand::Set { message_box, fee } => {
                let previous = store.set_delivery_fee(message_box, *fee).await?;
                tokio::time::sleep(DELIVERY_FEE_SETTLES).await;
                Ok(format!("{}\n", FeeChange { message_box: message_box.clone(), previous, fee: *fee }))
            }
        }
    }
}

/// What `fees set` changed, as the one line it prints: `notifications: 10 -> 25 satoshis`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeChange {
    /// As the operator typed it (the collation may have matched a row spelled differently).
    pub message_box: String,
    /// `None`: the box had no row.
    pub previous: Option<i64>,
    pub fee: i32,
}

impl fmt::Display for FeeChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = shown(&self.message_box);
        match self.previous {
            None => write!(f, "{name}: new box, {} satoshis", self.fee),
            Some(p) if p == i64::from(self.fee) => write!(f, "{name}: {p} satoshis (unchanged)"),
            Some(p) => write!(f, "{name}: {p} -> {} satoshis", self.fee),
        }
    }
}

/// The rows as an aligned table with a header, one box per line, no colours, so that
/// `grep notifications` or `awk` finds a box's line:
///
/// ```text
/// MESSAGE BOX    DELIVERY FEE (satoshis)  UPDATED (UTC)
/// inbox          0                        2025-12-03T08:34:56.000Z
/// notifications  10                       2025-12-03T08:34:56.000Z
/// ```
pub fn fee_table(fees: &[ServerFee]) -> String {
    const BOX: &str = "MESSAGE BOX";
    const FEE: &str = "DELIVERY FEE (satoshis)";
    const UPDATED: &str = "UPDATED (UTC)";
    let names: Vec<Cow<'_, str>> = fees.iter().map(|f| shown(&f.message_box)).collect();
    // `{:<w$}` pads by characters, as this width counts them.
    let w = names.iter().map(|n| n.chars().count()).chain([BOX.len()]).max().unwrap_or(0);
    let fw = FEE.len();
    let mut out = format!("{BOX:<w$}  {FEE:<fw$}  {UPDATED}\n");
    for (fee, name) in fees.iter().zip(&names) {
        let updated = fee.updated_at.map_or_else(|| "-".to_string(), iso8601);
        out.push_str(&format!("{name:<w$}  {:<fw$}  {updated}\n", fee.delivery_fee));
    }
    out
}

/// A box name fit for one line of output: names holding control characters (a newline would
/// split a row in two) are shown escaped, as Rust writes them in a string literal.
fn shown(name: &str) -> Cow<'_, str> {
    if name.chars().any(char::is_control) {
        Cow::Owned(name.escape_debug().to_string())
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_arguments() {
        let set = |b: &str, s: &str| FeesCommand::set(b, s);
        assert_eq!(set("inbox", "25"), Ok(FeesCommand::Set { message_box: "inbox".into(), fee: 25 }));
        assert_eq!(set("inbox", "0"), Ok(FeesCommand::Set { message_box: "inbox".into(), fee: 0 }));
        assert_eq!(set("inbox", "2147483647"), Ok(FeesCommand::Set { message_box: "inbox".into(), fee: i32::MAX }));
        for bad in ["-1", "-0", "+5", "abc", "", "1.5", " 5", "2147483648", "99999999999999999999"] {
            assert_eq!(set("inbox", bad), Err(FeeArgError::BadSatoshis(bad.into())), "{bad:?}");
        }
        assert_eq!(set("", "1"), Err(FeeArgError::EmptyBox));
        assert_eq!(set(" \t", "1"), Err(FeeArgError::EmptyBox));
        assert_eq!(set(" inbox", "1"), Err(FeeArgError::PaddedBox(" inbox".into())));
        let longest = "é".repeat(MAX_BOX_CHARS);
        assert!(set(&longest, "1").is_ok(), "the limit counts characters, not bytes");
        assert_eq!(set(&format!("{longest}x"), "1"), Err(FeeArgError::BoxTooLong(256)));
        // Each reason is one line.
        for e in [FeeArgError::EmptyBox, FeeArgError::PaddedBox("a\n".into()), FeeArgError::BadSatoshis("1\n".into())] {
            assert_eq!(e.to_string().lines().count(), 1, "{e}");
        }
        assert_eq!(
            FeeArgError::BadSatoshis("-1".into()).to_string(),
            "satoshis must be a whole number from 0 to 2147483647, got \"-1\""
        );
    }

    #[test]
    fn change_lines() {
        let change = |previous, fee| FeeChange { message_box: "notifications".into(), previous, fee }.to_string();
        assert_eq!(change(Some(10), 25), "notifications: 10 -> 25 satoshis");
        assert_eq!(change(None, 25), "notifications: new box, 25 satoshis");
        assert_eq!(change(Some(25), 25), "notifications: 25 satoshis (unchanged)");
    }

    #[test]
    fn table_is_aligned_and_one_line_per_box() {
        let row = |name: &str, fee, updated| ServerFee {
            message_box: name.into(),
            delivery_fee: fee,
            created_at: Some(0),
            updated_at: updated,
        };
        let text = fee_table(&[
            row("inbox", 0, Some(1_764_750_896)),
            row("a much longer box name", 2_147_483_647, None),
            row("two\nlines", 3, Some(0)),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "MESSAGE BOX             DELIVERY FEE (satoshis)  UPDATED (UTC)",
                "inbox                   0                        2025-12-03T08:34:56.000Z",
                "a much longer box name  2147483647               -",
                "two\\nlines              3                        1970-01-01T00:00:00.000Z",
            ]
        );
        assert_eq!(fee_table(&[]), "MESSAGE BOX  DELIVERY FEE (satoshis)  UPDATED (UTC)\n");
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn run_lists_and_sets() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let store = crate::store::open("sqlite::memory:", &Default::default()).await.unwrap();
            store.migrate().await.unwrap();
            let set = |b: &str, s: &str| FeesCommand::set(b, s).unwrap();
            assert_eq!(set("notifications", "25").run(&store).await.unwrap(), "notifications: 10 -> 25 satoshis\n");
            assert_eq!(set("alerts", "4").run(&store).await.unwrap(), "alerts: new box, 4 satoshis\n");
            let list = FeesCommand::List.run(&store).await.unwrap();
            let rows: Vec<Vec<&str>> = list.lines().skip(1).map(|l| l.split_whitespace().take(2).collect()).collect();
            assert_eq!(
                rows,
                [["alerts", "4"], ["inbox", "0"], ["notifications", "25"], ["payment_inbox", "0"]],
                "{list}"
            );
            assert_eq!(store.delivery_fee("alerts").await.unwrap(), Some(4));
        });
    }
}
