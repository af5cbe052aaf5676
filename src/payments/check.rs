//! The checks a delivery-fee payment passes before any wallet is asked to take it: the ones
//! the original's signer-side wallet makes (wallet-toolbox `internalizeAction`, with the
//! SDK's argument validation), in the same order and with the same texts, then the newer
//! upstream server's policy. The wallet behind [`PaymentAcceptor`](super::PaymentAcceptor)
//! makes its own checks again; what only a wallet can do — ask a chain tracker whether the
//! proven roots are real blocks, store the output — stays with it.
//!
//! In order (`payments-ship.md` §1.2, §1.8):
//! 1. `validateInternalizeActionArgs` of `{tx, outputs: [outputs[0]], description}`: the
//!    output (protocol, outputIndex, remittances), the description (5–2000 UTF-8 bytes), the
//!    tx (a BEEF with at least one transaction);
//! 2. the BEEF is structurally valid ([`Beef::verify_valid`]) and atomic, and holds its
//!    subject transaction;
//! 3. the output index is one of that transaction's outputs;
//! 4. the output is a `wallet payment` (the original passed a `basket insertion` to the
//!    wallet too, which then credits any output, even one paying the sender);
//! 5. its remittance names the authenticated sender (the newer upstream's rule);
//! 6. its locking script is the P2PKH of the server's BRC-29 key for that sender, prefix and
//!    suffix (BRC-42: `derivePrivateKey([2,'3241645161d8'], '<prefix> <suffix>', sender)`);
//! 7. it pays at least the delivery fee.

use serde_json::Value;

use super::beef::{display_hex, Beef, Transaction};
use crate::auth::keys::{invoice_number, Protocol, PublicKey};
use crate::auth::PrivateKey;
use crate::domain::IdentityKey;

/// BRC-29's protocol: `[2, '3241645161d8']`.
pub const BRC29_PROTOCOL: Protocol<'static> = Protocol::new(2, "3241645161d8");

/// What the original's server passes as `description` when the client gives none.
pub const DEFAULT_DESCRIPTION: &str = "MessageBox delivery payment (batch)";

/// The `description` the server passes the wallet: the client's (`String(…)` of a
/// non-string), else [`DEFAULT_DESCRIPTION`].
pub fn description(payment: &Value) -> String {
    match payment.get("description") {
        None | Some(Value::Null) => DEFAULT_DESCRIPTION.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => crate::domain::js::string(other),
    }
}

/// A delivery payment that passed every local check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedPayment {
    /// The paying transaction's txid (display hex): what the replay table records.
    pub txid: String,
    pub output_index: u32,
    pub satoshis: u64,
}

/// Why a delivery payment is refused before a wallet sees it. The texts are the SDK's and
/// wallet-toolbox's where they make the check, the newer upstream server's where it does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `ERR_INVALID_PAYMENT` with this text.
    #[error("{0}")]
    Invalid(String),
    /// `ERR_INSUFFICIENT_PAYMENT`: the output carries fewer satoshis than the fee.
    #[error("{}", UNDERPAID)]
    Insufficient { paid: u64, required: u64 },
}

/// `WERR_INVALID_PARAMETER`'s text: `The <parameter> parameter must be <must_be>`.
fn invalid(parameter: &str, must_be: &str) -> Refusal {
    Refusal::Invalid(format!("The {parameter} parameter must be {must_be}"))
}

const TX_UNPARSABLE: &str = "valid with at least one transaction to internalize an output from";
pub const NOT_WALLET_PAYMENT: &str =
    "The delivery output must be a 'wallet payment' to the server (protocol 'basket insertion' is not accepted).";
pub const UNDERPAID: &str = "The server delivery output does not pay the required amount.";
pub const WRONG_SENDER: &str = "The delivery payment remittance is invalid for the authenticated sender.";

/// Checks delivery payments against the server's key.
#[derive(Debug, Clone)]
pub struct PaymentChecker {
    server_key: PrivateKey,
}

impl PaymentChecker {
    pub fn new(server_key: PrivateKey) -> PaymentChecker {
        PaymentChecker { server_key }
    }

    /// Checks `payment` (the request's `payment` object: `tx`, `outputs`, `description`),
    /// whose `outputs[0]` pays the server's delivery fee `required` for a send by `sender`.
    pub fn check_delivery(
        &self,
        sender: &IdentityKey,
        payment: &Value,
        required: u64,
    ) -> Result<CheckedPayment, Refusal> {
        // 1 and 2.
        let (args, beef) = validate_args(payment)?;
        let (tx, txid) = atomic_subject(&beef)?;
        // 3. The output exists.
        let out = usize::try_from(args.output_index).ok().and_then(|i| tx.outputs.get(i)).ok_or_else(|| {
            invalid("outputIndex", &format!("a valid output index in range 0 to {}", tx.outputs.len() as i64 - 1))
        })?;
        // 4. A payment to the server, not an insertion into one of its baskets.
        if !args.wallet_payment {
            return Err(Refusal::Invalid(NOT_WALLET_PAYMENT.into()));
        }
        let Some(remittance) = args.payment else {
            return Err(invalid("paymentRemittance", "valid for protocol wallet payment"));
        };
        if args.has_insertion {
            return Err(Refusal::Invalid(
                "The wallet payment parameter must be valid paymentRemittance and no insertionRemittance".into(),
            ));
        }
        // 5. Paid by the sender (the key the output is derived for).
        let payer = PublicKey::parse_lenient(&remittance.sender)
            .ok()
            .filter(|k| IdentityKey::from(k) == *sender)
            .ok_or_else(|| Refusal::Invalid(WRONG_SENDER.into()))?;
        // 6. BRC-29: locked to the server's derived key.
        if out.locking_script != self.brc29_script(&payer, &remittance.prefix, &remittance.suffix)? {
            return Err(invalid("paymentRemittance", "locked by script conforming to BRC-29"));
        }
        // 7. The fee.
        if out.satoshis < required {
            return Err(Refusal::Insufficient { paid: out.satoshis, required });
        }
        Ok(CheckedPayment { txid, output_index: args.output_index as u32, satoshis: out.satoshis })
    }

    /// The P2PKH locking script of the server's BRC-29 key for `payer`, `prefix`, `suffix`.
    pub fn brc29_script(&self, payer: &PublicKey, prefix: &str, suffix: &str) -> Result<Vec<u8>, Refusal> {
        let invoice = invoice_number(BRC29_PROTOCOL, &format!("{prefix} {suffix}"))
            .map_err(|e| Refusal::Invalid(e.to_string()))?;
        let child =
            self.server_key.derive_child(payer, &invoice).map_err(|e| Refusal::Invalid(e.to_string()))?.public_key();
        Ok(p2pkh(&child))
    }
}

/// `OP_DUP OP_HASH160 <RIPEMD160(SHA256(key))> OP_EQUALVERIFY OP_CHECKSIG`.
pub fn p2pkh(key: &PublicKey) -> Vec<u8> {
    use ripemd::{Digest, Ripemd160};
    let hash = Ripemd160::digest(crate::auth::keys::sha256(&key.serialize()));
    let mut script = Vec::with_capacity(25);
    script.extend_from_slice(&[0x76, 0xa9, 0x14]);
    script.extend_from_slice(&hash);
    script.extend_from_slice(&[0x88, 0xac]);
    script
}

/// Step 1, `validateInternalizeActionArgs` of what the server passes the wallet: `outputs[0]`,
/// the description (the client's, else [`DEFAULT_DESCRIPTION`]) and the tx, parsed. The
/// server passes no labels, so none are checked.
fn validate_args(payment: &Value) -> Result<(OutputArgs, Beef), Refusal> {
    let output = payment
        .get("outputs")
        .and_then(|o| o.get(0))
        .ok_or_else(|| invalid("outputs", "at least one output to internalize from the transaction"))?;
    let args = validate_output(output)?;
    validate_length(&description(payment), "description", 5, 2000)?;
    let bytes = tx_bytes(payment.get("tx")).ok_or_else(|| invalid("tx", TX_UNPARSABLE))?;
    let beef = Beef::from_bytes(&bytes).map_err(|_| invalid("tx", TX_UNPARSABLE))?;
    if beef.txs.is_empty() {
        return Err(invalid("tx", TX_UNPARSABLE));
    }
    Ok((args, beef))
}

/// Step 2, the signer's BEEF checks: structurally valid, atomic, and holding its subject.
/// Returns the subject transaction and its txid (display hex). The signer also asks a chain
/// tracker about the roots; that is left to the wallet.
pub fn atomic_subject(beef: &Beef) -> Result<(&Transaction, String), Refusal> {
    let Some(subject) = beef.atomic_txid.filter(|_| beef.verify_valid().valid) else {
        return Err(invalid("tx", "valid AtomicBEEF"));
    };
    let txid = display_hex(&subject);
    match beef.find(&subject) {
        Some(tx) => Ok((tx, txid)),
        None => Err(invalid("tx", &format!("valid AtomicBEEF with newest txid of {txid}"))),
    }
}

/// The validated parts of `outputs[0]`.
struct OutputArgs {
    output_index: u64,
    wallet_payment: bool,
    payment: Option<Remittance>,
    has_insertion: bool,
}

/// A validated `paymentRemittance` (trimmed, as the SDK returns it).
struct Remittance {
    prefix: String,
    suffix: String,
    sender: String,
}

/// `validateInternalizeOutput`.
fn validate_output(output: &Value) -> Result<OutputArgs, Refusal> {
    let wallet_payment = match output.get("protocol").and_then(Value::as_str) {
        Some("wallet payment") => true,
        Some("basket insertion") => false,
        _ => return Err(invalid("protocol", "'basket insertion' or 'wallet payment'")),
    };
    let output_index = match output.get("outputIndex") {
        None => 0,
        Some(v) => integer(v).ok_or_else(|| invalid("outputIndex", "an integer"))?,
    };
    if output_index < 0 {
        return Err(invalid("outputIndex", "at least 0 length."));
    }
    let payment = match output.get("paymentRemittance") {
        None => None,
        Some(Value::Object(r)) => Some(Remittance {
            prefix: base64(r.get("derivationPrefix"), "derivationPrefix")?,
            suffix: base64(r.get("derivationSuffix"), "derivationSuffix")?,
            sender: hex_string(r.get("senderIdentityKey"), "senderIdentityKey")?,
        }),
        Some(_) => return Err(invalid("paymentRemittance", "valid for protocol wallet payment")),
    };
    let has_insertion = match output.get("insertionRemittance") {
        None => false,
        Some(Value::Object(r)) => {
            identifier(r.get("basket"), "basket")?;
            match r.get("customInstructions") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => validate_length(s, "customInstructions", 0, 1000)?,
                Some(_) => return Err(invalid("customInstructions", "no more than 1000 length.")),
            }
            match r.get("tags") {
                None | Some(Value::Null) => {}
                Some(Value::Array(tags)) => {
                    for t in tags {
                        identifier(Some(t), "tag")?;
                    }
                }
                Some(_) => return Err(invalid("tag", "at least 1 length.")),
            }
            true
        }
        Some(_) => return Err(invalid("basket", "at least 1 length.")),
    };
    Ok(OutputArgs { output_index: output_index as u64, wallet_payment, payment, has_insertion })
}

/// `Number.isInteger`: a JSON number without a fractional part.
fn integer(v: &Value) -> Option<i128> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i128::from(i));
    }
    if let Some(u) = n.as_u64() {
        return Some(i128::from(u));
    }
    let f = n.as_f64()?;
    (f.is_finite() && f.fract() == 0.0).then_some(f as i128)
}

/// `validateStringLength`: UTF-8 bytes within `min..=max`.
fn validate_length(s: &str, name: &str, min: usize, max: usize) -> Result<(), Refusal> {
    if s.len() < min {
        return Err(invalid(name, &format!("at least {min} length.")));
    }
    if s.len() > max {
        return Err(invalid(name, &format!("no more than {max} length.")));
    }
    Ok(())
}

/// `validateIdentifier(s, name, 1, 300)`: trimmed and lower-cased, 1–300 bytes.
fn identifier(v: Option<&Value>, name: &str) -> Result<(), Refusal> {
    let s = v.and_then(Value::as_str).ok_or_else(|| invalid(name, "at least 1 length."))?;
    validate_length(&crate::domain::js::trim(s).to_lowercase(), name, 1, 300)
}

/// `validateBase64String` (no size bounds): the alphabet `A-Z a-z 0-9 + /`, `=` only in the
/// last two places (at most two), and a length that is a multiple of 4. Returns the trimmed
/// string.
fn base64(v: Option<&Value>, name: &str) -> Result<String, Refusal> {
    let bad = || invalid(name, "valid base64 string");
    let s = crate::domain::js::trim(v.and_then(Value::as_str).ok_or_else(bad)?);
    if s.is_empty() {
        return Err(bad());
    }
    let len = s.len();
    let mut padding = 0;
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' => {}
            b'=' if i + 2 >= len => padding += 1,
            _ => return Err(bad()),
        }
    }
    let m = len % 4;
    if padding > 2 || (padding > 0 && m != 0) || (m != 0 && m != 4 - padding) {
        return Err(bad());
    }
    Ok(s.to_string())
}

/// `validateHexString` (no size bounds): trimmed, lower-cased, even length, hex digits.
fn hex_string(v: Option<&Value>, name: &str) -> Result<String, Refusal> {
    let s = crate::domain::js::trim(v.and_then(Value::as_str).ok_or_else(|| invalid(name, "hexadecimal string."))?)
        .to_lowercase();
    let units = s.encode_utf16().count();
    if units % 2 == 1 {
        return Err(invalid(name, &format!("even length, not {units}.")));
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(name, "hexadecimal string."));
    }
    Ok(s)
}

/// The `tx` field as bytes: a JSON array of integers 0–255 (what the SDK's `Beef.fromBinary`
/// reads; a hex string fails there too).
fn tx_bytes(v: Option<&Value>) -> Option<Vec<u8>> {
    v?.as_array()?.iter().map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vectors() -> Value {
        serde_json::from_str(include_str!("../../tests/data/payments/brc29_vectors.json")).unwrap()
    }

    fn key(v: &Value, name: &str) -> PrivateKey {
        PrivateKey::from_hex(v[name].as_str().unwrap()).unwrap()
    }

    /// The payment of `brc29_vectors.json` as a client sends it.
    fn vector_payment(v: &Value) -> Value {
        let tx: Vec<u8> = hex::decode(v["atomicBeefHex"].as_str().unwrap()).unwrap();
        json!({"tx": tx, "outputs": [{"outputIndex": 0, "protocol": "wallet payment", "paymentRemittance": {
            "derivationPrefix": v["derivationPrefix"], "derivationSuffix": v["derivationSuffix"],
            "senderIdentityKey": v["payerIdentityKey"]}}]})
    }

    #[test]
    fn brc29_vector_keys_and_script() {
        let v = vectors();
        let server = key(&v, "serverPrivateKey");
        let payer = key(&v, "payerPrivateKey");
        assert_eq!(server.public_key().to_hex(), v["serverIdentityKey"]);
        assert_eq!(payer.public_key().to_hex(), v["payerIdentityKey"]);
        let key_id = format!("{} {}", v["derivationPrefix"].as_str().unwrap(), v["derivationSuffix"].as_str().unwrap());
        assert_eq!(key_id, v["keyID"]);
        let invoice = invoice_number(BRC29_PROTOCOL, &key_id).unwrap();
        assert_eq!(invoice, v["invoice"]);
        // The server derives the private key; the payer derives the same public key.
        let child = server.derive_child(&payer.public_key(), &invoice).unwrap();
        assert_eq!(child.to_hex(), v["derivedPrivateKeyHex"]);
        assert_eq!(child.public_key().to_hex(), v["derivedPublicKey"]);
        assert_eq!(server.public_key().derive_child(&payer, &invoice).unwrap().to_hex(), v["derivedPublicKey"]);
        let checker = PaymentChecker::new(server);
        let script = checker
            .brc29_script(
                &payer.public_key(),
                v["derivationPrefix"].as_str().unwrap(),
                v["derivationSuffix"].as_str().unwrap(),
            )
            .unwrap();
        assert_eq!(hex::encode(&script), v["feeLockingScriptHex"]);
    }

    #[test]
    fn brc29_vector_transactions_and_proof() {
        let v = vectors();
        let parent = Transaction::from_bytes(&hex::decode(v["parentRawTx"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(display_hex(&parent.txid()), v["parentTxid"]);
        let payment = Transaction::from_bytes(&hex::decode(v["paymentRawTx"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(display_hex(&payment.txid()), v["paymentTxid"]);
        assert_eq!(hex::encode(&payment.outputs[0].locking_script), v["feeLockingScriptHex"]);
        let bump =
            super::super::beef::MerklePath::from_bytes(&hex::decode(v["merklePathHex"].as_str().unwrap()).unwrap())
                .unwrap();
        assert_eq!(bump.block_height, v["blockHeight"]);
        assert_eq!(display_hex(&bump.compute_root(&parent.txid()).unwrap()), v["merkleRoot"]);
        let bytes = hex::decode(v["atomicBeefHex"].as_str().unwrap()).unwrap();
        let beef = Beef::from_bytes(&bytes).unwrap();
        assert_eq!(beef.to_bytes(), bytes, "written back byte for byte");
        let (tx, txid) = atomic_subject(&beef).unwrap();
        assert_eq!((tx, txid.as_str()), (&payment, v["paymentTxid"].as_str().unwrap()));
        assert_eq!(
            beef.verify_valid().roots.values().map(display_hex).collect::<Vec<_>>(),
            [v["merkleRoot"].as_str().unwrap()]
        );
    }

    #[test]
    fn brc29_vector_payment_checks() {
        let v = vectors();
        let checker = PaymentChecker::new(key(&v, "serverPrivateKey"));
        let payer = IdentityKey::parse(v["payerIdentityKey"].as_str().unwrap()).unwrap();
        let payment = vector_payment(&v);
        let ok = checker.check_delivery(&payer, &payment, 10).unwrap();
        assert_eq!(
            ok,
            CheckedPayment { txid: v["paymentTxid"].as_str().unwrap().into(), output_index: 0, satoshis: 10 }
        );
        // One satoshi short.
        assert_eq!(checker.check_delivery(&payer, &payment, 11), Err(Refusal::Insufficient { paid: 10, required: 11 }));
        assert_eq!(
            Refusal::Insufficient { paid: 10, required: 11 }.to_string(),
            "The server delivery output does not pay the required amount."
        );
        // Another sender than the remittance names.
        let other = IdentityKey::from(&PrivateKey::from_bytes(&[0x44; 32]).unwrap().public_key());
        assert_eq!(checker.check_delivery(&other, &payment, 10), Err(Refusal::Invalid(WRONG_SENDER.into())));
        // Another server: the output is not locked to its key.
        let elsewhere = PaymentChecker::new(PrivateKey::from_bytes(&[0x22; 32]).unwrap());
        let brc29 = "The paymentRemittance parameter must be locked by script conforming to BRC-29";
        assert_eq!(elsewhere.check_delivery(&payer, &payment, 10), Err(Refusal::Invalid(brc29.into())));
        // Another suffix: another key.
        let mut changed = payment.clone();
        changed["outputs"][0]["paymentRemittance"]["derivationSuffix"] = json!("AAAA");
        assert_eq!(checker.check_delivery(&payer, &changed, 10), Err(Refusal::Invalid(brc29.into())));
        // Output 1 is the payer's change.
        let mut change = payment.clone();
        change["outputs"][0]["outputIndex"] = json!(1);
        assert_eq!(checker.check_delivery(&payer, &change, 10), Err(Refusal::Invalid(brc29.into())));
        change["outputs"][0]["outputIndex"] = json!(2);
        assert_eq!(
            checker.check_delivery(&payer, &change, 10),
            Err(Refusal::Invalid("The outputIndex parameter must be a valid output index in range 0 to 1".into()))
        );
        // A basket insertion of the same output.
        let mut basket = payment.clone();
        basket["outputs"][0] =
            json!({"outputIndex": 0, "protocol": "basket insertion", "insertionRemittance": {"basket": "b"}});
        assert_eq!(checker.check_delivery(&payer, &basket, 10), Err(Refusal::Invalid(NOT_WALLET_PAYMENT.into())));
        // A wallet payment without its remittance, or with an insertion remittance as well.
        let mut bare = payment.clone();
        bare["outputs"][0].as_object_mut().unwrap().remove("paymentRemittance");
        assert_eq!(
            checker.check_delivery(&payer, &bare, 10),
            Err(Refusal::Invalid("The paymentRemittance parameter must be valid for protocol wallet payment".into()))
        );
        let mut both = payment.clone();
        both["outputs"][0]["insertionRemittance"] = json!({"basket": "b"});
        assert_eq!(
            checker.check_delivery(&payer, &both, 10),
            Err(Refusal::Invalid(
                "The wallet payment parameter must be valid paymentRemittance and no insertionRemittance".into()
            ))
        );
        // The same payment as plain BEEF (no atomic prefix).
        let mut plain = payment.clone();
        plain["tx"] = json!(payment["tx"].as_array().unwrap()[36..].to_vec());
        assert_eq!(
            checker.check_delivery(&payer, &plain, 10),
            Err(Refusal::Invalid("The tx parameter must be valid AtomicBEEF".into()))
        );
    }

    /// The eight BEEF cases with the SDK's verdicts, and what the signer then says.
    #[test]
    fn beef_cases_of_the_sdk() {
        let cases: Value = serde_json::from_str(include_str!("../../tests/data/payments/beef_cases.json")).unwrap();
        let cases = cases.as_array().unwrap();
        assert_eq!(cases.len(), 8);
        for c in cases {
            let name = c["name"].as_str().unwrap();
            let beef = Beef::from_bytes(&hex::decode(c["hex"].as_str().unwrap()).unwrap()).unwrap();
            assert!(c["parsed"].as_bool().unwrap(), "{name}");
            assert_eq!(u64::from(beef.version), c["version"], "{name}");
            assert_eq!(beef.atomic_txid.map(|t| display_hex(&t)).as_deref(), c["atomicTxid"].as_str(), "{name}");
            let mut ours: Vec<String> = beef.txs.iter().map(|t| display_hex(&t.txid())).collect();
            let mut theirs: Vec<String> =
                c["txids"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
            ours.sort();
            theirs.sort();
            assert_eq!(ours, theirs, "{name}");
            let verdict = beef.verify_valid();
            assert_eq!(verdict.valid, c["valid"].as_bool().unwrap(), "{name}");
            let roots: serde_json::Map<String, Value> =
                verdict.roots.iter().map(|(h, r)| (h.to_string(), json!(display_hex(r)))).collect();
            assert_eq!(Value::Object(roots), c["rootsToCheck"], "{name}");
            let signer = atomic_subject(&beef).map(|(_, txid)| txid).map_err(|e| e.to_string());
            let expected = match name {
                "atomic_v1_valid" | "atomic_v2_valid" | "wrong_sibling_root" => {
                    Ok(c["atomicTxid"].as_str().unwrap().to_string())
                }
                "atomic_txid_not_in_beef" => Err(format!(
                    "The tx parameter must be valid AtomicBEEF with newest txid of {}",
                    c["atomicTxid"].as_str().unwrap()
                )),
                _ => Err("The tx parameter must be valid AtomicBEEF".to_string()),
            };
            // wrong_sibling_root is structurally valid: only a chain tracker (the wallet's) refuses its root.
            assert_eq!(signer, expected, "{name}");
            assert_eq!(Beef::from_bytes(&beef.to_bytes()).unwrap(), beef, "{name} round trip");
        }
    }

    /// `validate_msgs.js`'s cases against `validate_messages.txt`: the argument checks the
    /// server makes (it passes no labels, so the label case is the SDK's alone).
    #[test]
    fn validation_texts_of_the_sdk() {
        let expected: std::collections::HashMap<&str, Option<String>> =
            include_str!("../../tests/data/payments/validate_messages.txt")
                .lines()
                .map(|line| {
                    let (name, rest) = line.split_once(' ').unwrap();
                    let text = rest
                        .strip_prefix("=> WERR_INVALID_PARAMETER 6 ")
                        .map(|t| serde_json::from_str::<String>(t).unwrap());
                    (name, text)
                })
                .collect();
        let mut tx = vec![1u8, 1, 1, 1];
        tx.extend([0; 32]);
        tx.extend([1, 0, 190, 239, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let good = || json!({"tx": tx, "outputs": [{"outputIndex": 0, "protocol": "wallet payment", "paymentRemittance": {"derivationPrefix": "AAAA", "derivationSuffix": "BBBB", "senderIdentityKey": format!("02{}", "1".repeat(64))}}], "description": "hello world"});
        let cases: Vec<(&str, Value)> = vec![
            ("ok", good()),
            ("descShort", {
                let mut a = good();
                a["description"] = json!("abcd");
                a
            }),
            ("descLong", {
                let mut a = good();
                a["description"] = json!("x".repeat(2001));
                a
            }),
            // The server passes its default description for a missing one; the SDK sees none.
            ("descMissing", {
                let mut a = good();
                a["description"] = json!("");
                a
            }),
            ("noOutputs", {
                let mut a = good();
                a["outputs"] = json!([]);
                a
            }),
            ("badProtocol", {
                let mut a = good();
                a["outputs"][0]["protocol"] = json!("payment");
                a
            }),
            ("negIndex", {
                let mut a = good();
                a["outputs"][0]["outputIndex"] = json!(-1);
                a
            }),
            ("fracIndex", {
                let mut a = good();
                a["outputs"][0]["outputIndex"] = json!(1.5);
                a
            }),
            ("strIndex", {
                let mut a = good();
                a["outputs"][0]["outputIndex"] = json!("0");
                a
            }),
            ("badPrefix", {
                let mut a = good();
                a["outputs"][0]["paymentRemittance"]["derivationPrefix"] = json!("A*A=");
                a
            }),
            ("emptySuffix", {
                let mut a = good();
                a["outputs"][0]["paymentRemittance"]["derivationSuffix"] = json!("");
                a
            }),
            ("oddHexSender", {
                let mut a = good();
                a["outputs"][0]["paymentRemittance"]["senderIdentityKey"] = json!("021");
                a
            }),
            ("nonHexSender", {
                let mut a = good();
                a["outputs"][0]["paymentRemittance"]["senderIdentityKey"] = json!("zz");
                a
            }),
            ("badTx", {
                let mut a = good();
                a["tx"] = json!([1, 2, 3]);
                a
            }),
            ("txString", {
                let mut a = good();
                a["tx"] = json!("01010101");
                a
            }),
            ("basketDefault", {
                let mut a = good();
                a["outputs"][0] = json!({"outputIndex": 0, "protocol": "basket insertion", "insertionRemittance": {"basket": "default"}});
                a
            }),
            ("customInstrLong", {
                let mut a = good();
                a["outputs"][0] = json!({"outputIndex": 0, "protocol": "basket insertion", "insertionRemittance": {"basket": "b", "customInstructions": "x".repeat(1001)}});
                a
            }),
        ];
        assert_eq!(cases.len() + 1, expected.len(), "every vector but `label` is exercised");
        for (name, payment) in cases {
            let got = validate_args(&payment).map(|_| ()).map_err(|e| e.to_string());
            match &expected[name] {
                None => assert!(got.is_ok(), "{name}: {got:?}"),
                Some(text) => assert_eq!(got, Err(text.clone()), "{name}"),
            }
        }
        // A missing description is the server's default, which passes.
        let mut a = good();
        a.as_object_mut().unwrap().remove("description");
        assert!(validate_args(&a).is_ok());
    }

    #[test]
    fn base64_rules_of_the_sdk() {
        let ok = |s: &str| base64(Some(&json!(s)), "x").is_ok();
        assert!(ok("qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqo="));
        assert!(ok("YQ=="));
        assert!(ok("YWI="));
        assert!(ok("YWJj"));
        assert!(!ok("YQ"), "unpadded, length 2 mod 4 (the SDK wants padding)");
        assert!(!ok("YWI"), "unpadded, length 3 mod 4");
        assert!(ok(" YWJj "), "trimmed");
        assert!(!ok(""));
        assert!(!ok("Y"), "length 1 mod 4");
        assert!(!ok("YQ="), "padding with a length not a multiple of 4");
        assert!(!ok("Y=Q="), "padding before the last two places");
        assert!(!ok("YWJj-_"), "URL alphabet");
        assert!(base64(Some(&json!(5)), "x").is_err());
        assert_eq!(
            base64(Some(&json!("%")), "derivationPrefix").unwrap_err().to_string(),
            "The derivationPrefix parameter must be valid base64 string"
        );
    }

    #[test]
    fn hex_rules_of_the_sdk() {
        assert_eq!(hex_string(Some(&json!(" AB ")), "k").unwrap(), "ab");
        assert_eq!(
            hex_string(Some(&json!("abc")), "senderIdentityKey").unwrap_err().to_string(),
            "The senderIdentityKey parameter must be even length, not 3."
        );
        assert_eq!(
            hex_string(Some(&json!("zz")), "senderIdentityKey").unwrap_err().to_string(),
            "The senderIdentityKey parameter must be hexadecimal string."
        );
    }

    #[test]
    fn integers_as_javascript_sees_them() {
        assert_eq!(integer(&json!(0)), Some(0));
        assert_eq!(integer(&json!(2.0)), Some(2));
        assert_eq!(integer(&json!(-1)), Some(-1));
        assert_eq!(integer(&json!(1.5)), None);
        assert_eq!(integer(&json!("0")), None);
        assert_eq!(integer(&json!(null)), None);
    }

    #[test]
    fn tx_must_be_bytes() {
        assert_eq!(tx_bytes(Some(&json!([1, 2, 255]))), Some(vec![1, 2, 255]));
        assert_eq!(tx_bytes(Some(&json!([1, 256]))), None);
        assert_eq!(tx_bytes(Some(&json!([1, -1]))), None);
        assert_eq!(tx_bytes(Some(&json!("0100beef"))), None);
        assert_eq!(tx_bytes(None), None);
    }
}
