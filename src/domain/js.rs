//! The few JavaScript semantics the original's handlers apply to request values
//! (`String(x)`, `x.trim()`, `parseInt(x, 10)`, `typeof`), so validation answers the same.

use serde_json::Value;

/// `String.prototype.trim`: Unicode white space, line terminators and the BOM.
pub fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
}

/// True for a string that is blank after `trim()`.
pub fn is_blank(s: &str) -> bool {
    trim(s).is_empty()
}

/// `== null` (null or undefined).
pub fn is_nullish(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

/// JavaScript truthiness of a JSON value (`undefined` is `None`).
pub fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// `typeof v === 'object' && v !== null` (arrays included).
pub fn is_object_like(v: &Value) -> bool {
    matches!(v, Value::Object(_) | Value::Array(_))
}

/// `String(v)`.
pub fn string(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            a.iter().map(|x| if x.is_null() { String::new() } else { string(x) }).collect::<Vec<_>>().join(",")
        }
        Value::Object(_) => "[object Object]".into(),
    }
}

fn number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{f:.0}")
    } else {
        f.to_string()
    }
}

/// `Number.isInteger(v)` for a JSON value.
pub fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.is_finite() && f.fract() == 0.0),
        _ => false,
    }
}

/// `parseInt(s, 10)`: optional white space and sign, then the longest run of digits;
/// `None` for NaN.
pub fn parse_int(s: &str) -> Option<i64> {
    let s = trim(s);
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let end = digits.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    // Saturate instead of overflowing: the callers only compare against small bounds.
    let n = digits[..end].parse::<i64>().unwrap_or(i64::MAX);
    Some(if neg { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn js_string_conversion() {
        assert_eq!(string(&json!(123)), "123");
        assert_eq!(string(&json!(1.5)), "1.5");
        assert_eq!(string(&json!(2.0)), "2");
        assert_eq!(string(&json!(null)), "null");
        assert_eq!(string(&json!(true)), "true");
        assert_eq!(string(&json!([1, [2, null], "a"])), "1,2,,a");
        assert_eq!(string(&json!({"a": 1})), "[object Object]");
    }

    #[test]
    fn js_parse_int() {
        assert_eq!(parse_int("10abc"), Some(10));
        assert_eq!(parse_int("1e3"), Some(1));
        assert_eq!(parse_int(""), None);
        assert_eq!(parse_int("  -5"), Some(-5));
        assert_eq!(parse_int("0x10"), Some(0));
        assert_eq!(parse_int("abc"), None);
        assert_eq!(parse_int("99999999999999999999999"), Some(i64::MAX));
    }

    #[test]
    fn js_trim_and_integers() {
        assert_eq!(trim("\u{feff} a \n"), "a");
        assert!(is_blank(" \t\u{a0}"));
        assert!(is_integer(&json!(5)));
        assert!(is_integer(&json!(-1)));
        assert!(is_integer(&json!(2.0)));
        assert!(!is_integer(&json!(1.5)));
        assert!(!is_integer(&json!("5")));
    }
}
