//! Typed JSON reading and writing for the hot paths (BRC-103 messages, the authsocket
//! envelope, the live events), without `serde_json::Value` trees, and with exactly the
//! acceptance of the `Value` reading they replace.
//!
//! The rule this module owns: a typed decoder accepts a document only if
//! `serde_json::from_str::<Value>` would. Skipping with `IgnoredAny` or `RawValue` is more
//! lenient than `Value` (no nesting limit, lone surrogate escapes and out-of-range numbers
//! pass), so a skipped part is walked with [`AnyJson`] instead, or the whole document is
//! checked with it first ([`check`]).
//!
//! [`Lazy`] and [`Fields`] read a checked document only as deep as a handler asks: objects as
//! borrowed (key, raw value) lists with `Value`'s last-key-wins lookup, strings borrowed unless
//! they hold escapes. [`parse_byte_array`] and [`write_bytes`] read and write a byte array as
//! `JSON.stringify` writes a `number[]`, without a serde call per element.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// Any JSON value, walked and dropped: accepts exactly what `Value` accepts (the same
/// `deserialize_any` calls, so the same nesting limit, string and number checks), and
/// allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnyJson;

impl<'de> Deserialize<'de> for AnyJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AnyJson, D::Error> {
        d.deserialize_any(AnyJson)
    }
}

impl<'de> Visitor<'de> for AnyJson {
    type Value = AnyJson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_unit<E: de::Error>(self) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_none<E: de::Error>(self) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<AnyJson, D::Error> {
        AnyJson::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyJson, A::Error> {
        while seq.next_element::<AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyJson, A::Error> {
        while map.next_entry::<AnyJson, AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }
}

/// True when `text` is one JSON document `Value` would read.
pub fn check(text: &str) -> bool {
    serde_json::from_str::<AnyJson>(text).is_ok()
}

/// A JSON string, borrowed from the input unless it holds escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CowStr<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CowStr<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Borrowed(s)))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(s.to_string())))
            }

            fn visit_string<E: de::Error>(self, s: String) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Reads a `number[]` of byte values from its JSON text straight into bytes: `[`, integers
/// 0–255 separated by `,`, `]`, with JSON white space anywhere between. `None` for anything
/// else, including what `Vec<u8>`'s `Deserialize` would also refuse (a fraction, an exponent,
/// `-0`, a number past 255), so where this reads bytes `Vec<u8>` reads the same ones.
pub fn parse_byte_array(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while b.get(*i).is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')) {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if b.get(i) != Some(&b'[') {
        return None;
    }
    i += 1;
    skip_ws(&mut i);
    // Most elements take three or four characters with their comma.
    let mut out = Vec::with_capacity(b.len() / 3);
    if b.get(i) == Some(&b']') {
        i += 1;
    } else {
        loop {
            let start = i;
            let mut v: u32 = 0;
            while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
                v = v * 10 + u32::from(d - b'0');
                if v > 255 {
                    return None;
                }
                i += 1;
            }
            // No digits, or a leading zero (not JSON).
            if i == start || (b[start] == b'0' && i - start > 1) {
                return None;
            }
            out.push(v as u8);
            skip_ws(&mut i);
            match b.get(i) {
                Some(b',') => {
                    i += 1;
                    skip_ws(&mut i);
                }
                Some(b']') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    skip_ws(&mut i);
    (i == b.len()).then_some(out)
}

/// Writes `bytes` as `JSON.stringify` writes a `number[]`: `[1,2,255]`.
pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(2 + bytes.len() * 4);
    out.push(b'[');
    for (i, &b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if b >= 100 {
            out.extend_from_slice(&[b'0' + b / 100, b'0' + b / 10 % 10, b'0' + b % 10]);
        } else if b >= 10 {
            out.extend_from_slice(&[b'0' + b / 10, b'0' + b % 10]);
        } else {
            out.push(b'0' + b);
        }
    }
    out.push(b']');
}

/// One value of a document already [`check`]ed, read only as deep as asked.
#[derive(Debug, Clone, Copy)]
pub struct Lazy<'a>(pub &'a RawValue);

impl<'a> Lazy<'a> {
    /// The JSON text of the value.
    pub fn raw(&self) -> &'a str {
        self.0.get()
    }

    /// The string, when the value is one.
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        serde_json::from_str::<CowStr<'a>>(self.0.get()).ok().map(|s| s.0)
    }

    /// The fields of an object; an array reads as an object without fields (JavaScript's
    /// `typeof [] === 'object'`, and `Value::get` of a key on an array is `None`). `None` for
    /// anything else.
    pub fn object_like(&self) -> Option<Fields<'a>> {
        serde_json::from_str::<Fields<'a>>(self.0.get()).ok()
    }

    /// The value as `Value::to_string` writes it (compact, normalised numbers); for echoing
    /// a value the client sent. Not for the hot path: it builds the `Value`.
    pub fn to_value_string(&self) -> String {
        serde_json::from_str::<Value>(self.0.get()).map_or_else(|_| self.0.get().to_string(), |v| v.to_string())
    }
}

/// The fields of an object, borrowed, in document order (see [`Lazy::object_like`]).
#[derive(Debug, Clone, Default)]
pub struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Fields<'a> {
    /// The value of `key`; of a repeated key the last, as `Value` keeps it.
    pub fn get(&self, key: &str) -> Option<Lazy<'a>> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| Lazy(v))
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fields<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object or an array")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Fields<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Fields::default())
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::new();
                while let Some(key) = map.next_key::<CowStr<'de>>()? {
                    fields.push((key.0, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Documents `Value` refuses although `IgnoredAny` / `RawValue` skip them.
    fn lenient_only() -> Vec<String> {
        vec![
            format!("{}{}", "[".repeat(200), "]".repeat(200)),
            format!(r#"{{"a":{}1{}}}"#, "[".repeat(128), "]".repeat(128)),
            r#"{"a":"\ud800"}"#.to_string(),
            r#"{"a":"\udc00x"}"#.to_string(),
            r#"{"a":1e400}"#.to_string(),
            r#"[-1e309]"#.to_string(),
        ]
    }

    #[test]
    fn any_json_accepts_what_value_accepts() {
        let mut docs = lenient_only();
        docs.extend(
            [
                r#"{"a":[1,-2,3.5,1e10,true,false,null,"é\n\u00e9",{"b":{}}]}"#,
                r#"  "x"  "#,
                "1e308",
                r#"{"a":1,"a":2}"#,
                "",
                "[1,]",
                "{\"a\":\"\u{1}\"}",
                r#"{"a":"\ud83d\ude00"}"#,
                "nul",
                "[1] x",
            ]
            .map(String::from),
        );
        docs.push(format!("{}{}", "[".repeat(128), "]".repeat(128)));
        docs.push(format!("{}{}", "[".repeat(127), "]".repeat(127)));
        for d in &docs {
            assert_eq!(check(d), serde_json::from_str::<Value>(d).is_ok(), "{d}");
            assert!(serde_json::from_str::<IgnoredAny>(d).is_ok() || !check(d), "{d}");
        }
        for d in lenient_only() {
            assert!(serde_json::from_str::<IgnoredAny>(&d).is_ok() && !check(&d), "{d}");
        }
    }

    #[test]
    fn bytes_read_and_write_as_number_arrays() {
        use rand::{Rng, SeedableRng};
        let all: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        write_bytes(&mut out, &all);
        assert_eq!(out, serde_json::to_vec(&all).unwrap());
        let mut empty = Vec::new();
        write_bytes(&mut empty, &[]);
        assert_eq!(empty, b"[]");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(parse_byte_array(&text).unwrap(), all);
        assert_eq!(parse_byte_array(" [ 1 ,\n2\t]\r").unwrap(), [1, 2]);
        assert_eq!(parse_byte_array("[ ]").unwrap(), Vec::<u8>::new());
        for bad in [
            "[256]", "[-1]", "[-0]", "[1.0]", "[1e0]", "[\"1\"]", "[null]", "{}", "\"ab\"", "[1,]", "[01]", "[1 2]",
            "[1]]", "[", "",
        ] {
            assert!(parse_byte_array(bad).is_none(), "{bad}");
            assert!(serde_json::from_str::<Vec<u8>>(bad).is_err(), "{bad}");
        }
        // Where it reads bytes, `Vec<u8>` reads the same; it reads every array `Vec<u8>` writes.
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let alphabet = b"[],0123456789 -.e\n";
        for _ in 0..50_000 {
            let n = rng.random_range(0..12);
            let s: String = (0..n).map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())])).collect();
            if let Some(v) = parse_byte_array(&s) {
                assert_eq!(serde_json::from_str::<Vec<u8>>(&s).ok(), Some(v), "{s}");
            }
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            assert_eq!(parse_byte_array(&serde_json::to_string(&bytes).unwrap()), Some(bytes));
        }
    }

    #[test]
    fn lazy_fields_read_like_value() {
        let doc = r#"{"s":"a\"b","t":"plain","n":1.50,"o":{"k":[1]},"arr":[1,{"x":1}],"d":1,"d":"last"}"#;
        let v: Value = serde_json::from_str(doc).unwrap();
        let f = serde_json::from_str::<Fields>(doc).unwrap();
        assert_eq!(f.get("s").unwrap().as_str().unwrap(), "a\"b");
        assert!(matches!(f.get("t").unwrap().as_str(), Some(Cow::Borrowed("plain"))));
        assert_eq!(f.get("n").unwrap().as_str(), None);
        assert_eq!(f.get("n").unwrap().to_value_string(), v["n"].to_string());
        assert_eq!(f.get("o").unwrap().to_value_string(), v["o"].to_string());
        assert_eq!(f.get("d").unwrap().as_str().unwrap(), "last");
        assert!(f.get("missing").is_none());
        let inner = f.get("o").unwrap().object_like().unwrap();
        assert_eq!(inner.get("k").unwrap().raw(), "[1]");
        assert!(f.get("arr").unwrap().object_like().unwrap().get("x").is_none());
        assert!(f.get("s").unwrap().object_like().is_none());
        assert!(f.get("n").unwrap().object_like().is_none());
        let null: &RawValue = serde_json::from_str("null").unwrap();
        assert!(Lazy(null).object_like().is_none() && Lazy(null).as_str().is_none());
    }
}
