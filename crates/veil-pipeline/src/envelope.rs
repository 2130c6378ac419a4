//! The event envelope (spec §4), parsed borrowed from the input line.
//!
//! Serde errors are never shown to anyone: their text can quote the offending value.
//! The caller maps them to reason codes with fixed sentences.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

/// One envelope: `{"event", "time", "id"?, "attrs"}`.
///
/// `Deserialize` is the plain typed parse (the benchmarks' baseline); the door parses with
/// [`Envelope::parse_into`], which fills one envelope in place instead of moving its
/// inline attributes (about 450 bytes) through every layer of serde's return values.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Envelope<'a> {
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub attrs: Attrs<'a>,
}

/// Attributes in input order; duplicates are kept so the door can refuse them. Inline up
/// to eight, so a typical event's attributes cost no allocation.
#[derive(Default)]
pub struct Attrs<'a>(pub smallvec::SmallVec<[(Cow<'a, str>, Value<'a>); 8]>);

/// A scalar attribute value, or a marker that it was an object or array.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    /// Larger than i64::MAX.
    BigUint(u64),
    Float(f64),
    Bool(bool),
    Null,
    Nested,
}

impl<'de: 'a, 'a> Deserialize<'de> for Attrs<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Attrs<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of attributes")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Attrs<'a>, M::Error> {
                let mut out = smallvec::SmallVec::new();
                fill_attrs(&mut out, &mut m)?;
                Ok(Attrs(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<'a> Envelope<'a> {
    /// Parses one JSON object into `self` (which should be empty), accepting exactly what
    /// the derived `Deserialize` accepts from an object: the same fields, unknown and
    /// duplicate fields refused, `event` and `time` required. Trailing characters after
    /// the object are an error, as with `serde_json::from_str`.
    pub fn parse_into(&mut self, text: &'a str) -> serde_json::Result<()> {
        let mut de = serde_json::Deserializer::from_str(text);
        de::DeserializeSeed::deserialize(InPlace(self), &mut de)?;
        de.end()
    }
}

const FIELDS: &[&str] = &["event", "time", "id", "attrs"];

/// The seed behind [`Envelope::parse_into`].
struct InPlace<'e, 'a>(&'e mut Envelope<'a>);

impl<'de: 'a, 'a> de::DeserializeSeed<'de> for InPlace<'_, 'a> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for InPlace<'_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event envelope")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<(), M::Error> {
        let env = self.0;
        let mut seen = [false; 4];
        while let Some(k) = m.next_key::<CowStr<'a>>()? {
            let Some(i) = FIELDS.iter().position(|f| *f == k.0) else {
                return Err(de::Error::unknown_field(&k.0, FIELDS));
            };
            if std::mem::replace(&mut seen[i], true) {
                return Err(de::Error::duplicate_field(FIELDS[i]));
            }
            match i {
                0 => env.event = m.next_value::<CowStr<'a>>()?.0,
                1 => env.time = m.next_value::<CowStr<'a>>()?.0,
                2 => env.id = m.next_value::<Option<CowStr<'a>>>()?.map(|c| c.0),
                _ => m.next_value_seed(AttrsInPlace(&mut env.attrs))?,
            }
        }
        match seen {
            [false, ..] => Err(de::Error::missing_field("event")),
            [_, false, ..] => Err(de::Error::missing_field("time")),
            _ => Ok(()),
        }
    }
}

/// Pushes attributes straight into an envelope's inline vector.
struct AttrsInPlace<'e, 'a>(&'e mut Attrs<'a>);

impl<'de: 'a, 'a> de::DeserializeSeed<'de> for AttrsInPlace<'_, 'a> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for AttrsInPlace<'_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of attributes")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<(), M::Error> {
        fill_attrs(&mut self.0 .0, &mut m)
    }
}

/// Attributes in input order, at most 1,024 (shared by both parses).
fn fill_attrs<'de: 'a, 'a, M: MapAccess<'de>>(
    out: &mut smallvec::SmallVec<[(Cow<'a, str>, Value<'a>); 8]>,
    m: &mut M,
) -> Result<(), M::Error> {
    while let Some(k) = m.next_key::<CowStr<'a>>()? {
        let v = m.next_value::<Value<'a>>()?;
        out.push((k.0, v));
        if out.len() > 1024 {
            return Err(de::Error::custom("too many attributes"));
        }
    }
    Ok(())
}

struct CowStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = CowStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<CowStr<'a>, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CowStr<'a>, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<CowStr<'a>, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Value<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Value<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Value<'a>, E> {
                Ok(Value::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value<'a>, E> {
                Ok(Value::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Value<'a>, E> {
                Ok(Value::Str(Cow::Owned(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value<'a>, E> {
                Ok(Value::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value<'a>, E> {
                Ok(i64::try_from(v)
                    .map(Value::Int)
                    .unwrap_or(Value::BigUint(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value<'a>, E> {
                Ok(Value::Float(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value<'a>, E> {
                Ok(Value::Bool(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Value<'a>, E> {
                Ok(Value::Null)
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Value<'a>, M::Error> {
                skip_object(&mut m)?;
                Ok(Value::Nested)
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut s: S) -> Result<Value<'a>, S::Error> {
                skip_array(&mut s)?;
                Ok(Value::Nested)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Keys a nested object may hold before the event is refused.
const NESTED_KEYS: usize = 64;

/// The error text of a repeated key in a nested object; the door maps it to its reason.
pub const REPEATED_KEY: &str = "repeated key in an object";

/// Skips an object's entries, refusing a key that appears twice (an object with a
/// repeated key is refused at any depth: which of the two a reader keeps differs
/// between parsers, so accepting it would let two readers see two events).
#[cold]
#[inline(never)]
fn skip_object<'de, M: MapAccess<'de>>(m: &mut M) -> Result<(), M::Error> {
    let mut keys: smallvec::SmallVec<[String; 8]> = smallvec::SmallVec::new();
    while let Some(k) = m.next_key::<CowStr<'de>>()? {
        // A nested value is never a field (it is refused anyway), so a cap costs nothing
        // and keeps the repeat check from going quadratic on a crafted object.
        if keys.len() >= NESTED_KEYS {
            return Err(de::Error::custom("a nested object has too many keys"));
        }
        if keys.iter().any(|x| *x == k.0) {
            return Err(de::Error::custom(REPEATED_KEY));
        }
        keys.push(k.0.into_owned());
        m.next_value::<Skip>()?;
    }
    Ok(())
}

/// Skips an array's elements, checking objects inside it for repeated keys.
#[cold]
#[inline(never)]
fn skip_array<'de, S: SeqAccess<'de>>(s: &mut S) -> Result<(), S::Error> {
    while s.next_element::<Skip>()?.is_some() {}
    Ok(())
}

/// Any JSON value, skipped, with objects inside it checked for repeated keys.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Skip;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Skip, M::Error> {
                skip_object(&mut m)?;
                Ok(Skip)
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut s: S) -> Result<Skip, S::Error> {
                while s.next_element::<Skip>()?.is_some() {}
                Ok(Skip)
            }
        }
        d.deserialize_any(V)
    }
}

/// Maximum nesting depth of objects and arrays, strings skipped; stops counting early
/// once `limit` is exceeded.
pub fn depth_exceeds(bytes: &[u8], limit: usize) -> bool {
    // Cheap bound first: fewer openers than the limit cannot nest deeper than it.
    let openers = memchr::memchr2_iter(b'{', b'[', bytes).count();
    if openers <= limit {
        return false;
    }
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for &b in bytes {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a parse produced, comparable across the two parsers.
    fn outcome(r: serde_json::Result<Envelope<'_>>) -> Result<String, serde_json::error::Category> {
        r.map(|e| {
            let attrs: Vec<String> = e
                .attrs
                .0
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            format!("{}|{}|{:?}|{}", e.event, e.time, e.id, attrs.join(","))
        })
        .map_err(|e| e.classify())
    }

    #[test]
    fn the_in_place_parse_accepts_and_refuses_what_the_derived_one_does() {
        let cases = [
            r#"{"event":"a","time":"t","id":"x","attrs":{"k":"v","n":1,"f":1.5,"b":true,"z":null,"o":{"p":[1]}}}"#,
            r#"{"attrs":{"k":"v"},"time":"t","event":"a"}"#,
            r#"{"event":"a","time":"t"}"#,
            r#"{"event":"a","time":"t","id":null}"#,
            r#"{"event":"a","time":"t","attrs":{}}"#,
            r#"{"event":"\u0061","time":"t","attrs":{"\u006b":"\"v\"","k":"w"}}"#,
            r#"{"event":"a","time":"t","attrs":{"big":18446744073709551615,"neg":-3}}"#,
            r#"{"event":"a"}"#,
            r#"{"time":"t"}"#,
            r#"{"event":"a","time":"t","extra":1}"#,
            r#"{"event":"a","event":"b","time":"t"}"#,
            r#"{"event":"a","time":"t","attrs":{"k":"v"},"attrs":{}}"#,
            r#"{"event":1,"time":"t"}"#,
            r#"{"event":"a","time":"t","id":5}"#,
            r#"{"event":"a","time":"t","attrs":[1,2]}"#,
            r#"{"event":"a","time":"t","attrs":"x"}"#,
            r#"{"event":"a","time":"t"} trailing"#,
            r#"{"event":"a","time":"t""#,
            r#"{"event":"a","time":"t",}"#,
            r#""just a string""#,
            r#"17"#,
            r#""#,
        ];
        for text in cases {
            let mut env = Envelope::default();
            let in_place = outcome(env.parse_into(text).map(|()| env));
            let derived = outcome(serde_json::from_str::<Envelope>(text));
            assert_eq!(in_place, derived, "{text}");
        }
        // Over 1,024 attributes is refused by both.
        let many: Vec<String> = (0..1100).map(|i| format!("\"a{i}\":1")).collect();
        let text = format!(
            r#"{{"event":"a","time":"t","attrs":{{{}}}}}"#,
            many.join(",")
        );
        let mut env = Envelope::default();
        assert!(env.parse_into(&text).is_err());
        assert!(serde_json::from_str::<Envelope>(&text).is_err());
        // The derived parse also takes a struct written as an array; an envelope is an
        // object (spec §4), and the door refuses the array as a malformed envelope.
        let text = r#"["a","t",null,{}]"#;
        assert!(serde_json::from_str::<Envelope>(text).is_ok());
        let mut env = Envelope::default();
        let e = env.parse_into(text).unwrap_err();
        assert_eq!(e.classify(), serde_json::error::Category::Data);
    }
}
