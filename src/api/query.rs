//! Query strings read the way Express's `qs` parser reads them: repeated keys and `key[]`
//! become arrays, `key[sub]` becomes an object (which no route accepts).

/// One query parameter's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryValue {
    One(String),
    Many(Vec<String>),
    /// `key[sub]=…`: an object in `qs`; routes treat it as invalid.
    Object,
}

impl QueryValue {
    /// The value when it is a single string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            QueryValue::One(s) => Some(s),
            _ => None,
        }
    }

    /// The values as a list (a single value is a one-element list).
    pub fn to_vec(&self) -> Option<Vec<String>> {
        match self {
            QueryValue::One(s) => Some(vec![s.clone()]),
            QueryValue::Many(v) => Some(v.clone()),
            QueryValue::Object => None,
        }
    }
}

/// Parsed parameters in first-appearance order.
#[derive(Debug, Clone, Default)]
pub struct Query {
    params: Vec<(String, QueryValue)>,
}

/// At most this many parameters are read (qs's default `parameterLimit` is 1000).
const MAX_PARAMS: usize = 1000;

impl Query {
    /// `raw` without the leading `?`.
    pub fn parse(raw: &str) -> Query {
        let mut q = Query::default();
        for (k, v) in form_urlencoded::parse(raw.as_bytes()).take(MAX_PARAMS) {
            let (key, kind) = match k.find('[') {
                Some(i) if k.ends_with("[]") && i == k.len() - 2 => (k[..i].to_string(), Kind::Array),
                Some(i) if k.ends_with(']') && i > 0 => (k[..i].to_string(), Kind::Object),
                _ => (k.into_owned(), Kind::Plain),
            };
            q.add(key, kind, v.into_owned());
        }
        q
    }

    fn add(&mut self, key: String, kind: Kind, value: String) {
        let slot = self.params.iter_mut().find(|(k, _)| *k == key);
        match (slot, kind) {
            (Some((_, existing)), Kind::Object) => *existing = QueryValue::Object,
            (None, Kind::Object) => self.params.push((key, QueryValue::Object)),
            (Some((_, existing)), _) => match existing {
                QueryValue::One(s) => *existing = QueryValue::Many(vec![std::mem::take(s), value]),
                QueryValue::Many(v) => v.push(value),
                QueryValue::Object => {}
            },
            (None, Kind::Array) => self.params.push((key, QueryValue::Many(vec![value]))),
            (None, Kind::Plain) => self.params.push((key, QueryValue::One(value))),
        }
    }

    pub fn get(&self, key: &str) -> Option<&QueryValue> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Plain,
    Array,
    Object,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qs_shapes() {
        let q = Query::parse("recipient=a&messageBox=in%20box&recipient=b&x[]=1&y[k]=2&s=a+b");
        assert_eq!(q.get("recipient"), Some(&QueryValue::Many(vec!["a".into(), "b".into()])));
        assert_eq!(q.get("messageBox").and_then(QueryValue::as_str), Some("in box"));
        assert_eq!(q.get("x"), Some(&QueryValue::Many(vec!["1".into()])));
        assert_eq!(q.get("y"), Some(&QueryValue::Object));
        assert_eq!(q.get("s").and_then(QueryValue::as_str), Some("a b"));
        assert_eq!(q.get("none"), None);
        assert_eq!(Query::parse("a=").get("a").and_then(QueryValue::as_str), Some(""));
    }
}
