//! The default-fee rule of [`Backend::recipient_fees`](super::Backend::recipient_fees),
//! once for both backends: a recipient with no rule for the box gets a box-wide rule with
//! the default fee, and that is its fee. The backends supply the two statements.

use super::StoreError;

/// One sender's fee rules for one box, as a backend reads and writes them.
pub(crate) trait FeeRules {
    /// The fee `recipient` charges now (see [`sql::FEE_RULE`](super::sql::FEE_RULE)), if a
    /// rule applies.
    async fn lookup(&mut self, recipient: &str) -> Result<Option<i64>, StoreError>;

    /// Inserts `recipient`'s box-wide rule with `fee` unless it has a box-wide rule; whether
    /// it inserted (see [`sql::INSERT_DEFAULT_FEE_MYSQL`](super::sql::INSERT_DEFAULT_FEE_MYSQL)).
    async fn insert_default(&mut self, recipient: &str, fee: i64) -> Result<bool, StoreError>;
}

/// Each recipient's fee, given `found` (the fee each one's rules give, if any): a recipient
/// without one gets a box-wide default row. When such a row exists already (another request
/// created it, or an earlier duplicate recipient did), the fee is what now applies.
pub(crate) async fn with_defaults<R: FeeRules>(
    rules: &mut R,
    recipients: &[String],
    found: Vec<Option<i64>>,
    default_fee: i64,
) -> Result<Vec<i64>, StoreError> {
    let mut fees = Vec::with_capacity(found.len());
    for (recipient, fee) in recipients.iter().zip(found) {
        let fee = match fee {
            Some(fee) => fee,
            None if rules.insert_default(recipient, default_fee).await? => {
                tracing::debug!(recipient = %recipient, fee = default_fee, "created box-wide default permission");
                default_fee
            }
            None => rules.lookup(recipient).await?.unwrap_or(default_fee),
        };
        fees.push(fee);
    }
    Ok(fees)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Box-wide rules by recipient.
    #[derive(Default)]
    struct Rules(HashMap<String, i64>, Vec<String>);

    impl FeeRules for Rules {
        async fn lookup(&mut self, recipient: &str) -> Result<Option<i64>, StoreError> {
            self.1.push(format!("lookup {recipient}"));
            Ok(self.0.get(recipient).copied())
        }

        async fn insert_default(&mut self, recipient: &str, fee: i64) -> Result<bool, StoreError> {
            self.1.push(format!("insert {recipient}"));
            let fresh = !self.0.contains_key(recipient);
            self.0.entry(recipient.to_string()).or_insert(fee);
            Ok(fresh)
        }
    }

    #[test]
    fn missing_rules_get_the_default_once() {
        let mut rules = Rules::default();
        rules.0.insert("taken".into(), 9);
        let recipients: Vec<String> = ["a", "known", "a", "taken"].map(String::from).to_vec();
        let found = vec![None, Some(3), None, None];
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let fees = rt.block_on(with_defaults(&mut rules, &recipients, found, 10)).unwrap();
        // `a` appears twice: the second finds the row the first created; `taken` got its
        // box-wide rule from someone else after the first lookup.
        assert_eq!(fees, [10, 3, 10, 9]);
        assert_eq!(rules.1, ["insert a", "insert a", "lookup a", "insert taken", "lookup taken"]);
    }
}
