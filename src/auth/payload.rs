//! BRC-104: the binary serialisation of an HTTP request and response that BRC-103 signs,
//! the `x-bsv-auth-*` header names, and the selection and order of signed headers.
//!
//! Serialisers write into any [`Sink`], so the server can stream a request straight into
//! SHA-256 without copying the body, and tests can capture the exact bytes.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

pub const H_VERSION: &str = "x-bsv-auth-version";
pub const H_IDENTITY_KEY: &str = "x-bsv-auth-identity-key";
pub const H_NONCE: &str = "x-bsv-auth-nonce";
pub const H_YOUR_NONCE: &str = "x-bsv-auth-your-nonce";
pub const H_SIGNATURE: &str = "x-bsv-auth-signature";
pub const H_REQUEST_ID: &str = "x-bsv-auth-request-id";
pub const H_MESSAGE_TYPE: &str = "x-bsv-auth-message-type";
pub const H_REQUESTED_CERTIFICATES: &str = "x-bsv-auth-requested-certificates";

/// Where serialised bytes go.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// Bitcoin CompactSize of a non-negative length.
pub fn write_varint(out: &mut impl Sink, n: u64) {
    if n < 0xfd {
        out.put(&[n as u8]);
    } else if n <= 0xffff {
        out.put(&[0xfd]);
        out.put(&(n as u16).to_le_bytes());
    } else if n <= 0xffff_ffff {
        out.put(&[0xfe]);
        out.put(&(n as u32).to_le_bytes());
    } else {
        out.put(&[0xff]);
        out.put(&n.to_le_bytes());
    }
}

/// The "absent" marker, `varint(-1)`: `ff` followed by eight `ff`.
pub const ABSENT: [u8; 9] = [0xff; 9];

fn write_bytes(out: &mut impl Sink, b: &[u8]) {
    write_varint(out, b.len() as u64);
    out.put(b);
}

fn write_optional(out: &mut impl Sink, b: Option<&[u8]>) {
    match b {
        Some(b) => write_bytes(out, b),
        None => out.put(&ABSENT),
    }
}

/// Reads a CompactSize; `ff…ff` reads as -1. Returns the value and the bytes consumed.
pub fn read_varint(b: &[u8]) -> Option<(i64, usize)> {
    match *b.first()? {
        n @ 0..=0xfc => Some((n as i64, 1)),
        0xfd => Some((u16::from_le_bytes(b.get(1..3)?.try_into().ok()?) as i64, 3)),
        0xfe => Some((u32::from_le_bytes(b.get(1..5)?.try_into().ok()?) as i64, 5)),
        0xff => Some((u64::from_le_bytes(b.get(1..9)?.try_into().ok()?) as i64, 9)),
    }
}

/// The parts of an HTTP request that BRC-104 signs.
#[derive(Debug, Clone, Copy)]
pub struct RequestPayload<'a> {
    pub request_id: &'a [u8; 32],
    pub method: &'a str,
    /// The path, starting with `/`.
    pub path: &'a str,
    /// The query including its leading `?`; `None` (or a bare `?`) is absent.
    pub query: Option<&'a str>,
    /// Signed headers, already selected and sorted ([`select_request_headers`]).
    pub headers: &'a [(String, String)],
    /// `None` is absent (`-1`); `Some(b"")` is written as an empty, present body.
    pub body: Option<&'a [u8]>,
}

impl RequestPayload<'_> {
    pub fn write(&self, out: &mut impl Sink) {
        out.put(self.request_id);
        write_bytes(out, self.method.as_bytes());
        write_optional(out, (!self.path.is_empty()).then_some(self.path.as_bytes()));
        let query = self.query.filter(|q| !q.is_empty() && *q != "?");
        write_optional(out, query.map(str::as_bytes));
        write_varint(out, self.headers.len() as u64);
        for (k, v) in self.headers {
            write_bytes(out, k.as_bytes());
            write_bytes(out, v.as_bytes());
        }
        write_optional(out, self.body);
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64 + self.path.len() + self.body.map_or(0, <[u8]>::len));
        self.write(&mut v);
        v
    }

    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        self.write(&mut h);
        h.finalize().into()
    }
}

/// The parts of an HTTP response that BRC-104 signs.
#[derive(Debug, Clone, Copy)]
pub struct ResponsePayload<'a> {
    pub request_id: &'a [u8; 32],
    pub status: u16,
    /// Signed headers, selected and sorted ([`select_response_headers`]).
    pub headers: &'a [(String, String)],
    /// Always written with its length: the TS client rebuilds an empty body as `00`.
    pub body: &'a [u8],
}

impl ResponsePayload<'_> {
    pub fn write(&self, out: &mut impl Sink) {
        out.put(self.request_id);
        write_varint(out, self.status as u64);
        write_varint(out, self.headers.len() as u64);
        for (k, v) in self.headers {
            write_bytes(out, k.as_bytes());
            write_bytes(out, v.as_bytes());
        }
        write_bytes(out, self.body);
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64 + self.body.len());
        self.write(&mut v);
        v
    }

    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        self.write(&mut h);
        h.finalize().into()
    }
}

fn is_signed_custom(name: &str) -> bool {
    name.starts_with("x-bsv-") && !name.starts_with("x-bsv-auth")
}

/// Header bytes as Node exposes them (Latin-1), re-encoded as UTF-8 by the TS middleware.
/// ASCII (every header a client normally sends) is the same in both and is borrowed.
fn latin1_to_utf8(v: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(v) {
        Ok(ascii) if v.is_ascii() => Cow::Borrowed(ascii),
        _ => Cow::Owned(v.iter().map(|&b| b as char).collect()),
    }
}

/// The signed request headers, as the server rebuilds them: `content-type` (cut at `;`,
/// trimmed), `authorization`, and `x-bsv-*` except `x-bsv-auth*`; names lower-cased, sorted
/// by byte order. Duplicates behave as in Node: the first `content-type`/`authorization`
/// wins, duplicate `x-bsv-*` values are joined with `", "`.
pub fn select_request_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        // Every request carries headers that are not signed: they are skipped before any
        // copy is made (hyper's names are lower case already).
        let lowered;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = name.to_ascii_lowercase();
            lowered.as_str()
        } else {
            name
        };
        let content_type = name == "content-type";
        if !content_type && name != "authorization" && !is_signed_custom(name) {
            continue;
        }
        let value = latin1_to_utf8(value);
        let value = if content_type { value.split(';').next().unwrap_or("").trim() } else { value.trim() };
        match out.iter_mut().find(|(k, _)| *k == name) {
            Some((_, existing)) if is_signed_custom(name) => {
                existing.push_str(", ");
                existing.push_str(value);
            }
            Some(_) => {}
            None => out.push((name.to_string(), value.to_string())),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The signed response headers: `x-bsv-*` except `x-bsv-auth*`, and `authorization`; sorted.
pub fn select_response_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .filter(|(k, _)| k == "authorization" || is_signed_custom(k))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The client's selection (AuthFetch.serializeRequest): it refuses any header outside the
/// signable set, so a caller learns about a header that would not be signed.
pub fn client_request_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        if name.starts_with("x-bsv-auth") {
            return Err(format!("No BSV auth headers allowed here: {name}"));
        }
        if name.starts_with("content-type") {
            out.push((name, value.split(';').next().unwrap_or("").trim().to_string()));
        } else if name == "authorization" || name.starts_with("x-bsv-") {
            out.push((name, value.to_string()));
        } else {
            return Err(format!("Unsupported header in the simplified fetch implementation. Only content-type, authorization, and x-bsv-* headers are supported. Header: {name}"));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Splits a request target into path and query (query keeps its `?`).
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.find('?') {
        Some(i) => (&target[..i], Some(&target[i..])),
        None => (target, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vi(n: u64) -> String {
        let mut v = Vec::new();
        write_varint(&mut v, n);
        hex::encode(v)
    }

    #[test]
    fn varints() {
        assert_eq!(vi(0), "00");
        assert_eq!(vi(252), "fc");
        assert_eq!(vi(253), "fdfd00");
        assert_eq!(vi(65535), "fdffff");
        assert_eq!(vi(65536), "fe00000100");
        assert_eq!(vi(1 << 32), "ff0000000001000000");
        assert_eq!(read_varint(&ABSENT), Some((-1, 9)));
        assert_eq!(read_varint(&[0xfd, 0xfd, 0x00]), Some((253, 3)));
        assert_eq!(read_varint(&[0xfd, 0xfd]), None);
        assert_eq!(read_varint(&[]), None);
    }

    #[test]
    fn header_selection() {
        let h = select_request_headers([
            ("X-BSV-Topic", &b"b"[..]),
            ("Content-Type", b"application/json; charset=utf-8"),
            ("Authorization", b"Bearer x"),
            ("x-bsv-auth-nonce", b"n"),
            ("accept", b"*/*"),
            ("x-bsv-topic", b"c"),
            ("content-type", b"text/plain"),
        ]);
        assert_eq!(
            h,
            vec![
                ("authorization".into(), "Bearer x".into()),
                ("content-type".into(), "application/json".into()),
                ("x-bsv-topic".into(), "b, c".into()),
            ]
        );
        assert_eq!(select_request_headers([("x-bsv-n", &[0xe9u8][..])])[0].1, "\u{e9}");
        let r = select_response_headers([
            ("x-bsv-b", "1"),
            ("content-type", "x"),
            ("x-bsv-auth-nonce", "n"),
            ("x-bsv-a", " 2 "),
        ]);
        assert_eq!(r, vec![("x-bsv-a".into(), "2".into()), ("x-bsv-b".into(), "1".into())]);
        assert!(client_request_headers([("accept", "x")]).is_err());
        assert!(client_request_headers([("x-bsv-auth-x", "x")]).is_err());
    }

    #[test]
    fn empty_query_is_absent() {
        let id = [7u8; 32];
        let a =
            RequestPayload { request_id: &id, method: "GET", path: "/x", query: Some("?"), headers: &[], body: None }
                .to_vec();
        let b = RequestPayload { request_id: &id, method: "GET", path: "/x", query: None, headers: &[], body: None }
            .to_vec();
        assert_eq!(a, b);
        assert_eq!(hex::encode(&a[32..]), "03474554022f78ffffffffffffffffff00ffffffffffffffffff");
    }
}
