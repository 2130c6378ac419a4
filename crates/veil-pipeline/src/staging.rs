//! The staging row format: how a minimized event is laid out inside an encrypted staging
//! segment, and how a segment is read back (for grants and subject requests).
//!
//! A segment holds the events of one collection, epoch and UTC day from one batch. Its
//! plaintext is a format byte, the column names (`time`, then every retained field in
//! policy order) as a length-prefixed JSON array, then the rows back to back. A row is
//! the event's second of the day as a varint, then one tagged value per retained field.
//! Segments written before this format (a JSON header line, then one JSON array per
//! line) start with `[` and are still read.
//!
//! Why binary: staging rows are most of what an ingest commit writes, and the commit's
//! cost is its bytes. A pseudonym is 16 bytes instead of 24 characters of quoted base64,
//! a time two or three bytes instead of ten digits, a string its length and bytes. The
//! encoding is per value, never a dictionary across rows: how much a segment shrinks
//! must not depend on which values repeat (the reason staging is not compressed).

use crate::keys::Pseudonym;
use crate::varint::{put, unzigzag, zigzag, Reader};
use serde_json::{Map, Value};
use veil_policy::Collection;

/// First byte of a segment in this format; older JSON segments start with `[`.
const FORMAT: u8 = 2;

const NULL: u8 = 0;
const INT: u8 = 1;
const DECIMAL: u8 = 2;
const FALSE: u8 = 3;
const TRUE: u8 = 4;
const STR: u8 = 5;
const PSEUDONYM: u8 = 6;
const TIME: u8 = 7;

/// The UTC day an event's segment belongs to; rows store their time relative to it.
pub fn day_of(time: i64) -> i64 {
    time.div_euclid(86_400)
}

/// The column names of a collection's segments: `time`, then every retained field in
/// policy order — the values of each row, in that order.
fn columns(c: &Collection) -> Vec<&str> {
    std::iter::once("time")
        .chain(
            c.fields
                .iter()
                .filter(|f| f.is_retained())
                .map(|f| f.name()),
        )
        .collect()
}

/// The start of a segment of `c`: format byte and column names. Rows follow directly.
pub fn segment_header(c: &Collection) -> Vec<u8> {
    let names = serde_json::to_vec(&columns(c)).expect("names serialize");
    let mut out = Vec::with_capacity(names.len() + 4);
    out.push(FORMAT);
    put(&mut out, names.len() as u64);
    out.extend_from_slice(&names);
    out
}

/// Starts a row: the event's second within its day.
pub(crate) fn put_time(out: &mut Vec<u8>, time: i64) {
    put(out, (time - day_of(time) * 86_400) as u64);
}

/// An absent optional field.
pub(crate) fn put_null(out: &mut Vec<u8>) {
    out.push(NULL);
}

/// An integer, or a decimal stored as an integer scaled by `10^decimals`.
pub(crate) fn put_int(out: &mut Vec<u8>, x: i64, decimals: u32) {
    if decimals == 0 {
        out.push(INT);
    } else {
        out.push(DECIMAL);
        put(out, u64::from(decimals));
    }
    put(out, zigzag(x));
}

pub(crate) fn put_bool(out: &mut Vec<u8>, b: bool) {
    out.push(if b { TRUE } else { FALSE });
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.push(STR);
    put(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn put_pseudonym(out: &mut Vec<u8>, p: &Pseudonym) {
    out.push(PSEUDONYM);
    out.extend_from_slice(p.bytes());
}

/// A timestamp value (read back as RFC 3339).
pub(crate) fn put_timestamp(out: &mut Vec<u8>, t: i64) {
    out.push(TIME);
    put(out, zigzag(t));
}

/// One staged event read back: its time and retained attributes (absent ones left out).
#[derive(Debug, Clone, PartialEq)]
pub struct StagedEvent {
    pub time: i64,
    pub attrs: Map<String, Value>,
}

/// A segment that does not decode: it passed authentication, so this is a bug or a
/// format from the future, never input from outside.
#[derive(Debug, thiserror::Error)]
#[error("a staging segment does not decode: {0}")]
pub struct CorruptSegment(&'static str);

/// Every event of a decrypted segment of day `day`, in the order written.
pub fn decode_segment(plain: &[u8], day: i64) -> Result<Vec<StagedEvent>, CorruptSegment> {
    match plain.first() {
        Some(&FORMAT) => decode_binary(&plain[1..], day),
        Some(b'[') => decode_json(plain),
        _ => Err(CorruptSegment("unknown format")),
    }
}

fn decode_binary(data: &[u8], day: i64) -> Result<Vec<StagedEvent>, CorruptSegment> {
    let mut r = Reader(data);
    let short = || CorruptSegment("truncated");
    let hlen = r.var().ok_or_else(short)?;
    let header = r
        .bytes(usize::try_from(hlen).map_err(|_| short())?)
        .ok_or_else(short)?;
    let names: Vec<String> =
        serde_json::from_slice(header).map_err(|_| CorruptSegment("no column names"))?;
    let fields = names.get(1..).ok_or(CorruptSegment("no time column"))?;
    let mut out = Vec::new();
    while !r.is_empty() {
        let second = r.var().ok_or_else(short)?;
        if second >= 86_400 {
            return Err(CorruptSegment("a time outside its day"));
        }
        let mut attrs = Map::new();
        for name in fields {
            let v = match r.byte().ok_or_else(short)? {
                NULL => continue,
                INT => Value::from(unzigzag(r.var().ok_or_else(short)?)),
                DECIMAL => {
                    let d = r.var().filter(|&d| d <= 18).ok_or_else(short)? as u32;
                    let x = unzigzag(r.var().ok_or_else(short)?);
                    let mut text = Vec::new();
                    write_scaled(&mut text, x, d);
                    serde_json::from_slice(&text).map_err(|_| CorruptSegment("a bad decimal"))?
                }
                FALSE => Value::Bool(false),
                TRUE => Value::Bool(true),
                STR => {
                    let n = usize::try_from(r.var().ok_or_else(short)?).map_err(|_| short())?;
                    let b = r.bytes(n).ok_or_else(short)?;
                    let s = std::str::from_utf8(b).map_err(|_| CorruptSegment("not UTF-8"))?;
                    Value::String(s.to_owned())
                }
                PSEUDONYM => {
                    let b = r.bytes(16).ok_or_else(short)?;
                    Value::String(
                        Pseudonym::from_bytes(b.try_into().expect("sixteen bytes")).encode(),
                    )
                }
                TIME => Value::String(crate::door::rfc3339(unzigzag(r.var().ok_or_else(short)?))),
                _ => return Err(CorruptSegment("an unknown value tag")),
            };
            attrs.insert(name.clone(), v);
        }
        out.push(StagedEvent {
            time: day * 86_400 + second as i64,
            attrs,
        });
    }
    Ok(out)
}

/// The first format: a JSON header line, then one JSON array per event.
fn decode_json(plain: &[u8]) -> Result<Vec<StagedEvent>, CorruptSegment> {
    let text = std::str::from_utf8(plain).map_err(|_| CorruptSegment("not UTF-8"))?;
    let mut lines = text.lines();
    let header: Vec<String> = serde_json::from_str(lines.next().unwrap_or("[]"))
        .map_err(|_| CorruptSegment("no column names"))?;
    lines
        .map(|line| {
            let row: Vec<Value> =
                serde_json::from_str(line).map_err(|_| CorruptSegment("a row is not JSON"))?;
            let time = row
                .first()
                .and_then(Value::as_i64)
                .ok_or(CorruptSegment("a row without its time"))?;
            let attrs = header
                .iter()
                .zip(row)
                .skip(1)
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v))
                .collect();
            Ok(StagedEvent { time, attrs })
        })
        .collect()
}

/// `x / 10^decimals` as a JSON number with exactly `decimals` digits after the point.
fn write_scaled(out: &mut Vec<u8>, x: i64, decimals: u32) {
    use std::io::Write;
    if decimals == 0 {
        out.extend_from_slice(itoa::Buffer::new().format(x).as_bytes());
    } else {
        let p = 10i64.pow(decimals);
        let sign = if x < 0 { "-" } else { "" };
        write!(
            out,
            "{sign}{}.{:0width$}",
            (x / p).unsigned_abs(),
            (x % p).unsigned_abs(),
            width = decimals as usize
        )
        .expect("write to Vec");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn rows_round_trip(
            second in 0i64..86_400,
            day in -1000i64..30_000,
            ints in proptest::collection::vec(any::<i64>(), 0..4),
            dec in (1u32..6, -1_000_000_000i64..1_000_000_000),
            s in "\\PC{0,40}",
            p in any::<[u8; 16]>(),
            flag in any::<bool>(),
            ts in 0i64..253_402_300_799,
        ) {
            let time = day * 86_400 + second;
            let mut names = vec!["time".to_string()];
            let mut row = Vec::new();
            put_time(&mut row, time);
            let mut want = Map::new();
            for (i, x) in ints.iter().enumerate() {
                put_int(&mut row, *x, 0);
                names.push(format!("i{i}"));
                want.insert(format!("i{i}"), Value::from(*x));
            }
            put_int(&mut row, dec.1, dec.0);
            names.push("dec".into());
            let mut text = Vec::new();
            write_scaled(&mut text, dec.1, dec.0);
            want.insert("dec".into(), serde_json::from_slice(&text).unwrap());
            put_null(&mut row);
            names.push("absent".into());
            put_str(&mut row, &s);
            names.push("s".into());
            want.insert("s".into(), Value::String(s.clone()));
            put_pseudonym(&mut row, &Pseudonym::from_bytes(p));
            names.push("p".into());
            want.insert("p".into(), Value::String(Pseudonym::from_bytes(p).encode()));
            put_bool(&mut row, flag);
            names.push("b".into());
            want.insert("b".into(), Value::Bool(flag));
            put_timestamp(&mut row, ts);
            names.push("ts".into());
            want.insert("ts".into(), Value::String(crate::door::rfc3339(ts)));

            let header = serde_json::to_vec(&names).unwrap();
            let mut seg = vec![FORMAT];
            put(&mut seg, header.len() as u64);
            seg.extend_from_slice(&header);
            seg.extend_from_slice(&row);
            seg.extend_from_slice(&row);
            let got = decode_segment(&seg, day).unwrap();
            let one = StagedEvent { time, attrs: want };
            prop_assert_eq!(got, vec![one.clone(), one]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut seg = vec![FORMAT];
            seg.extend_from_slice(&data);
            let _ = decode_segment(&seg, 20_000);
            let _ = decode_segment(&data, 20_000);
        }
    }

    #[test]
    fn truncated_rows_are_corrupt_not_short() {
        let header = br#"["time","a","b"]"#;
        let mut seg = vec![FORMAT];
        put(&mut seg, header.len() as u64);
        seg.extend_from_slice(header);
        put_time(&mut seg, 1_763_800_000);
        put_str(&mut seg, "payments");
        put_int(&mut seg, 300, 0);
        let whole = decode_segment(&seg, day_of(1_763_800_000)).unwrap();
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].time, 1_763_800_000);
        for cut in 1..seg.len() {
            if cut > header.len() + 2 {
                assert!(
                    decode_segment(&seg[..cut], day_of(1_763_800_000)).is_err(),
                    "{cut}"
                );
            }
        }
    }

    #[test]
    fn json_segments_of_the_first_format_still_read() {
        let seg = b"[\"time\",\"team\",\"ms\",\"user\"]\n[1763800000,\"payments\",null,\"x\"]\n";
        let got = decode_segment(seg, 0).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].time, 1_763_800_000);
        assert_eq!(
            Value::Object(got[0].attrs.clone()),
            serde_json::json!({"team": "payments", "user": "x"})
        );
    }
}
