//! The door: one event in, either a minimized event with its metric contributions or a
//! [`Rejection`]. Everything is checked before anything is produced, so an event is
//! applied whole or not at all.
//!
//! Invariant: this is the only module that sees raw values. What leaves it holds
//! pseudonyms, declared values, generalized values and redacted text — nothing else.

use crate::envelope::{depth_exceeds, Envelope, Value};
use crate::keys::{ContributorId, EpochId, Identifier, KeyRing, Pseudonym};
use crate::pii;
use crate::reject::{safe_name, Reason, Rejection};
use crate::staging;
use crate::window;
use chrono::{DateTime, Datelike};
use std::borrow::Cow;
use std::net::IpAddr;
use veil_policy::*;

/// Size limits on one event (spec §4; configurable).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_attributes: usize,
    pub max_string_bytes: usize,
    pub max_depth: usize,
    /// How far in the future an event time may lie (clock skew), in seconds.
    pub max_future_secs: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 64 * 1024,
            max_attributes: 64,
            max_string_bytes: 4096,
            max_depth: 8,
            max_future_secs: 300,
        }
    }
}

/// Who sent the events, and which collections they may send.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    /// `None` means every collection (local CLI ingest by an operator).
    pub collections: Option<Vec<String>>,
    /// Collections with `lawful_basis: consent` for which this source attests that it
    /// sends only events of people who consented (its principal's `consent` key). `None`
    /// means the local operator, whose own ingest is its attestation.
    pub consent: Option<Vec<String>>,
}

/// The sentence of an `opted_out` refusal.
const OPTED_OUT: &str = "the person this event is about opted out; the event was not stored";

/// The sentence of an `epoch_shredded` refusal for the event's window.
const WINDOW_SHREDDED: &str = "the key period this event's window started in has been shredded; the window's numbers are final";

/// The sentence of a `consent_missing` refusal (kept off the hot path).
#[cold]
#[inline(never)]
fn consent_missing(collection: &str) -> String {
    format!(
        "{collection} is collected on consent, and this source has not declared that it sends only events of people who consented (`consent` in its principal); the event was not stored"
    )
}

/// One event's share of one metric: what aggregation state is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    /// Index of the metric in `Policy::metrics()` order.
    pub metric: u32,
    pub window_start: i64,
    /// Group values joined by U+001F, in the metric's `by` order (inline when short,
    /// as nearly all are: no allocation per contribution).
    pub group: compact_str::CompactString,
    /// The person's id in this metric's window (see [`ContributorId`]): derived under the
    /// keys of the epoch in which the window starts, so one person has one id for the
    /// whole window even across a key rotation.
    pub contributor: ContributorId,
    /// Histogram bin, or -1.
    pub bin: i32,
    /// 1 for counts; the clamped, scaled measure for sums and means.
    pub value: i64,
}

/// An event that passed the door.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub collection: usize,
    pub epoch: EpochId,
    pub time: i64,
    pub dedupe: Option<[u8; 16]>,
    /// The minimized event as a staging row (its time, then the retained values in field
    /// order; see [`crate::staging`]): what staging stores, encrypted.
    pub payload: Vec<u8>,
    pub contributions: Vec<Contribution>,
    /// Measures clamped into range (counted, per `out_of_range: clamp`).
    pub clamped: u32,
    /// Retained strings in which PII was found and redacted.
    pub redacted: u32,
    /// Undeclared attributes dropped by the collection's `ignore_attributes`.
    pub dropped: u32,
}

/// The events of one batch that passed the door. Per-event facts sit in one vector and
/// every payload and contribution in two shared buffers, so admitting a batch costs a
/// few growing allocations, reused batch after batch ([`AcceptedBatch::clear`] keeps
/// them), instead of two allocations and two cross-thread frees per event.
#[derive(Debug, Clone, Default)]
pub struct AcceptedBatch {
    events: Vec<EventFacts>,
    payloads: Vec<u8>,
    contributions: Vec<Contribution>,
}

/// One event's facts in an [`AcceptedBatch`]; its payload and contributions end where
/// the next event's begin.
#[derive(Debug, Clone)]
struct EventFacts {
    collection: usize,
    epoch: EpochId,
    time: i64,
    dedupe: Option<[u8; 16]>,
    had_id: bool,
    payload_end: usize,
    contributions_end: usize,
    clamped: u32,
    redacted: u32,
    dropped: u32,
}

/// One event of an [`AcceptedBatch`], borrowed: the fields of [`Accepted`].
#[derive(Debug, Clone, Copy)]
pub struct AcceptedRef<'b> {
    pub collection: usize,
    pub epoch: EpochId,
    pub time: i64,
    pub dedupe: Option<[u8; 16]>,
    /// Whether the event carried its own `id`.
    pub had_id: bool,
    pub payload: &'b [u8],
    pub contributions: &'b [Contribution],
    pub clamped: u32,
    pub redacted: u32,
    pub dropped: u32,
}

impl AcceptedBatch {
    /// Events in the batch.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event passed.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Empties the batch and keeps its memory for the next one.
    pub fn clear(&mut self) {
        self.events.clear();
        self.payloads.clear();
        self.contributions.clear();
    }

    /// The `i`th event.
    pub fn get(&self, i: usize) -> Option<AcceptedRef<'_>> {
        let e = self.events.get(i)?;
        let (p0, c0) = match i.checked_sub(1).map(|j| &self.events[j]) {
            Some(prev) => (prev.payload_end, prev.contributions_end),
            None => (0, 0),
        };
        Some(AcceptedRef {
            collection: e.collection,
            epoch: e.epoch,
            time: e.time,
            dedupe: e.dedupe,
            had_id: e.had_id,
            payload: &self.payloads[p0..e.payload_end],
            contributions: &self.contributions[c0..e.contributions_end],
            clamped: e.clamped,
            redacted: e.redacted,
            dropped: e.dropped,
        })
    }

    /// Every event, in the order admitted.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = AcceptedRef<'_>> + Clone + '_ {
        (0..self.len()).map(|i| self.get(i).expect("index in range"))
    }

    /// Closes the event whose payload and contributions were just written.
    #[allow(clippy::too_many_arguments)]
    fn seal_event(
        &mut self,
        collection: usize,
        epoch: EpochId,
        time: i64,
        dedupe: Option<[u8; 16]>,
        had_id: bool,
        clamped: u32,
        redacted: u32,
        dropped: u32,
    ) {
        self.events.push(EventFacts {
            collection,
            epoch,
            time,
            dedupe,
            had_id,
            payload_end: self.payloads.len(),
            contributions_end: self.contributions.len(),
            clamped,
            redacted,
            dropped,
        });
    }

    /// Drops what an event being admitted wrote before it was refused: the batch ends
    /// where its last whole event ends.
    fn abandon(&mut self) {
        let (p, c) = self
            .events
            .last()
            .map_or((0, 0), |e| (e.payload_end, e.contributions_end));
        self.payloads.truncate(p);
        self.contributions.truncate(c);
    }
}

impl From<AcceptedRef<'_>> for Accepted {
    fn from(a: AcceptedRef<'_>) -> Self {
        Accepted {
            collection: a.collection,
            epoch: a.epoch,
            time: a.time,
            dedupe: a.dedupe,
            payload: a.payload.to_vec(),
            contributions: a.contributions.to_vec(),
            clamped: a.clamped,
            redacted: a.redacted,
            dropped: a.dropped,
        }
    }
}

/// What identifies an event that carries no `id` of its own, for idempotency.
#[derive(Debug, Clone, Copy)]
pub enum MissingId<'a> {
    /// Nothing: the event counts every time it is sent.
    Unidentified,
    /// A name from the request (a gateway's `Idempotency-Key` and the event's index), so a
    /// retried request counts once.
    Named(&'a str),
    /// The event's own bytes and its position among the input's events, blank lines not
    /// counted (`veil ingest`): the same file ingested twice — or grown by appending —
    /// counts each event once, while identical lines within one file each count.
    Content { position: u64 },
}

/// Per collection (policy order), the instant before which its events are `late`: an
/// event earlier than it falls, for at least one of the collection's metrics, in a window
/// that is already sealed. `sealed_before[g]` is metric `g`'s seal boundary (policy
/// order; missing or `i64::MIN` = nothing sealed). The one rule for `late`, shared by the
/// door and by the store's re-check at commit, so the two cannot disagree.
pub fn late_before(policy: &Policy, sealed_before: &[i64]) -> Vec<i64> {
    let mut g = 0;
    let mut out = Vec::with_capacity(policy.collections().len());
    for c in policy.collections() {
        let mut cut = i64::MIN;
        for m in &c.metrics {
            let sealed = sealed_before.get(g).copied().unwrap_or(i64::MIN);
            g += 1;
            if sealed == i64::MIN {
                continue;
            }
            // `window::start(w, t) < sealed` exactly when `t` is before the first window
            // start at or after `sealed` (a boundary written by a seal is itself one).
            let s = window::start(m.window, sealed);
            let first = if s == sealed {
                sealed
            } else {
                window::end(m.window, s)
            };
            cut = cut.max(first);
        }
        out.push(cut);
    }
    out
}

/// Group key separator; declared values may not contain it.
pub const GROUP_SEP: char = '\u{1f}';

/// The door for one batch: a policy, its keys and a fixed "now".
pub struct Door<'a> {
    policy: &'a Policy,
    keys: &'a KeyRing,
    limits: Limits,
    now: i64,
    metric_base: Vec<u32>,
    /// Per collection: events before this instant are `late` (see [`late_before`]).
    late_before: Vec<i64>,
    /// Per metric (policy order), its contributor keys in every epoch a window of an
    /// acceptable event can start in.
    metric_keys: Vec<crate::keys::MetricKeys>,
}

/// A parsed field value before its transform.
enum V<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Bool(bool),
    Ts(i64),
    Ip(IpAddr),
}

impl<'a> Door<'a> {
    /// `sealed_before[g]`: for metric `g` (policy order), windows starting before this
    /// are sealed; an event that falls in a sealed window of any of its collection's
    /// metrics is rejected as `late`, since sealed numbers never change.
    pub fn new(
        policy: &'a Policy,
        keys: &'a KeyRing,
        limits: Limits,
        now: i64,
        sealed_before: Vec<i64>,
    ) -> Self {
        let mut metric_base = Vec::with_capacity(policy.collections().len());
        let mut n = 0u32;
        for c in policy.collections() {
            metric_base.push(n);
            n += c.metrics.len() as u32;
        }
        let late_before = late_before(policy, &sealed_before);
        // The oldest acceptable event is one staging retention back; its window can start
        // up to a month (the longest window) before it.
        let oldest = policy
            .collections()
            .iter()
            .map(|c| c.staging_retention)
            .max()
            .unwrap_or(0);
        let from = now.saturating_sub(oldest + 32 * 86_400);
        let metric_keys = policy
            .metrics()
            .map(|(_, m)| keys.metric_keys(&m.name, from))
            .collect();
        Door {
            policy,
            keys,
            limits,
            now,
            metric_base,
            late_before,
            metric_keys,
        }
    }

    /// Runs one raw event (one NDJSON line, without its newline) through the door.
    pub fn admit(&self, line: &[u8], source: &Source) -> Result<Accepted, Rejection> {
        let mut out = AcceptedBatch::default();
        self.admit_into(line, source, MissingId::Unidentified, &mut out)?;
        Ok(out.get(0).expect("one event admitted").into())
    }

    /// Runs one raw event through the door into `out`, which is left as it was when the
    /// event is rejected. `missing` says what identifies the event for idempotency when it
    /// carries no `id` of its own.
    pub fn admit_into(
        &self,
        line: &[u8],
        source: &Source,
        missing: MissingId<'_>,
        out: &mut AcceptedBatch,
    ) -> Result<(), Rejection> {
        let mut env = Envelope::default();
        self.parse(line, &mut env)?;
        let mut content = None;
        let had_id = env.id.is_some();
        if !had_id {
            match missing {
                MissingId::Unidentified => {}
                MissingId::Named(d) => env.id = Some(Cow::Owned(d.to_owned())),
                MissingId::Content { position } => {
                    content = Some(self.keys.content_dedupe_key(position, line))
                }
            }
        }
        self.admit_checked(&env, source, content, had_id, out)
    }

    /// Size and UTF-8 limits, the borrowed envelope parse, then the depth limit. An event
    /// that parses into scalar attributes is two levels deep, so the whole-line depth pass
    /// runs only on the rare lines that fail to parse or carry nested values — with the
    /// same verdicts as running it before the parse. (UTF-8 stays one pass up front:
    /// `std`'s check of a whole line costs a tenth of checking each string on its own.)
    fn parse<'l>(&self, line: &'l [u8], env: &mut Envelope<'l>) -> Result<(), Rejection> {
        if line.len() > self.limits.max_event_bytes {
            return Err(Rejection::new(
                Reason::TooLarge,
                format!(
                    "the event is larger than the {} byte limit",
                    self.limits.max_event_bytes
                ),
            ));
        }
        let text = std::str::from_utf8(line)
            .map_err(|_| Rejection::new(Reason::InvalidUtf8, "the event is not valid UTF-8"))?;
        let parsed = env.parse_into(text);
        let rare = parsed.is_err()
            || self.limits.max_depth < 2
            || env.attrs.0.iter().any(|(_, v)| matches!(v, Value::Nested));
        if rare && depth_exceeds(line, self.limits.max_depth) {
            return Err(Rejection::new(
                Reason::TooDeep,
                format!(
                    "the event nests objects or arrays deeper than {} levels",
                    self.limits.max_depth
                ),
            ));
        }
        parsed.map_err(|e| match e.classify() {
            // serde's text never leaves here; these two are told apart by it only to pick
            // the reason code.
            serde_json::error::Category::Data
                if e.to_string().starts_with(crate::envelope::REPEATED_KEY)
                    || e.to_string().starts_with("duplicate field") =>
            {
                Rejection::new(
                    Reason::DuplicateField,
                    "the event repeats a key in one of its objects",
                )
            }
            serde_json::error::Category::Data => Rejection::new(
                Reason::MalformedEnvelope,
                "the event must be an object with a string event, a string time, an optional string id and an attrs object, and nothing else",
            ),
            _ => Rejection::new(Reason::MalformedJson, format!("the event is not valid JSON (column {})", e.column())),
        })
    }

    /// Runs an already-parsed envelope through the door into `out` (OTLP and other
    /// decoders enter here). `out` is left as it was when the event is rejected:
    /// everything is checked before the first byte is written.
    pub fn admit_envelope_into(
        &self,
        env: &Envelope<'_>,
        source: &Source,
        out: &mut AcceptedBatch,
    ) -> Result<(), Rejection> {
        self.admit_checked(env, source, None, env.id.is_some(), out)
    }

    /// The door after the parse; `content` is the dedupe key derived from the event's
    /// bytes when it has no id of its own.
    fn admit_checked(
        &self,
        env: &Envelope<'_>,
        source: &Source,
        content: Option<[u8; 16]>,
        had_id: bool,
        out: &mut AcceptedBatch,
    ) -> Result<(), Rejection> {
        let names = |env: &Envelope, c: Option<&Collection>| -> Vec<String> {
            env.attrs
                .0
                .iter()
                .map(|(k, _)| {
                    if c.and_then(|c| c.field_index(k)).is_some() {
                        k.to_string()
                    } else {
                        safe_name(k)
                    }
                })
                .collect()
        };
        let Some(ci) = self.policy.collection_index(&env.event) else {
            return Err(Rejection::new(
                Reason::UnknownEvent,
                "the event names no collection declared in the policy",
            )
            .with_names(None, names(env, None)));
        };
        let coll = &self.policy.collections()[ci];
        let fail = |reason: Reason, msg: String| {
            Rejection::new(reason, msg).with_names(Some(coll.name.clone()), names(env, Some(coll)))
        };
        if let Some(allowed) = &source.collections {
            if !allowed.iter().any(|a| a == &coll.name) {
                return Err(fail(
                    Reason::NotAllowedForSource,
                    format!("this source may not send {}", coll.name),
                ));
            }
        }
        if let Some(attested) = &source.consent {
            if coll.lawful_basis == "consent" && !attested.iter().any(|a| a == &coll.name) {
                return Err(fail(Reason::ConsentMissing, consent_missing(&coll.name)));
            }
        }
        let time = parse_time(&env.time).ok_or_else(|| {
            fail(
                Reason::InvalidTime,
                "time must be an RFC 3339 timestamp such as 2026-11-20T10:00:00Z".into(),
            )
        })?;
        if time > self.now + self.limits.max_future_secs {
            return Err(fail(
                Reason::TimeInFuture,
                "time lies in the future beyond the allowed clock skew".into(),
            ));
        }
        if time < self.now - coll.staging_retention {
            return Err(fail(
                Reason::TimeTooOld,
                format!(
                    "time is older than the collection's {} staging retention",
                    duration::human(coll.staging_retention)
                ),
            ));
        }
        if time < self.late_before[ci] {
            return Err(fail(Reason::Late, crate::reject::LATE_MESSAGE.into()).on_day(time));
        }
        if env.attrs.0.len() > self.limits.max_attributes {
            return Err(fail(
                Reason::TooManyAttributes,
                format!(
                    "the event has more than {} attributes",
                    self.limits.max_attributes
                ),
            ));
        }
        if let Some(id) = &env.id {
            if id.is_empty() || id.len() > 256 {
                return Err(fail(
                    Reason::MalformedEnvelope,
                    "id must be a non-empty string of at most 256 bytes".into(),
                ));
            }
        }

        // Resolve and type-check every attribute before producing anything.
        let mut vals: smallvec::SmallVec<[Option<V>; 16]> = smallvec::SmallVec::new();
        vals.resize_with(coll.fields.len(), || None);
        // Seen apart from the values: `{"k": null, "k": "x"}` repeats a key too.
        let mut seen: smallvec::SmallVec<[bool; 16]> =
            smallvec::smallvec![false; coll.fields.len()];
        let mut clamped = 0u32;
        let mut dropped = 0u32;
        // Names of dropped attributes, to refuse a repeated one as any repeated key is.
        let mut dropped_names: smallvec::SmallVec<[&str; 8]> = smallvec::SmallVec::new();
        for (k, v) in &env.attrs.0 {
            let Some(fi) = coll.field_index(k) else {
                if coll.ignore.matches(k) {
                    if dropped_names.contains(&k.as_ref()) {
                        return Err(fail(
                            Reason::DuplicateField,
                            format!("attribute {} appears more than once", safe_name(k)),
                        ));
                    }
                    // Describes the emitter (or the policy says so): never read, never stored.
                    dropped_names.push(k);
                    dropped += 1;
                    continue;
                }
                return Err(fail(
                    Reason::FieldNotAllowed,
                    format!(
                        "field {} is not declared for {}; the whole event was not stored",
                        safe_name(k),
                        coll.name
                    ),
                ));
            };
            if std::mem::replace(&mut seen[fi], true) {
                return Err(fail(
                    Reason::DuplicateField,
                    format!("field {k} appears more than once"),
                ));
            }
            let f = &coll.fields[fi];
            vals[fi] = self
                .check_value(f, v, &mut clamped)
                .map_err(|(r, m)| fail(r, m))?;
        }
        for (fi, f) in coll.fields.iter().enumerate() {
            if f.required() && vals[fi].is_none() {
                return Err(fail(
                    Reason::MissingField,
                    format!("required field {} is missing", f.name()),
                ));
            }
        }

        // Minimize: every field becomes what the door keeps of it — after its transform
        // and the PII scan — and only that ([`Kept`]) reaches the staging row and the group
        // keys. Identifiers are set apart, normalized, and only ever pseudonymized.
        let mut kept: smallvec::SmallVec<[Kept; 16]> = smallvec::SmallVec::new();
        let mut idents: smallvec::SmallVec<[(usize, Identifier); 4]> = Default::default();
        let mut redacted = 0u32;
        for (fi, (f, v)) in coll.fields.iter().zip(vals.drain(..)).enumerate() {
            let k = match minimize(f, v, &mut redacted) {
                Ok(Minimized::Kept(k)) => k,
                Ok(Minimized::Identifier(s)) => {
                    idents.push((fi, Identifier::new(s, f.normalize())));
                    Kept::Absent // replaced by the pseudonym below
                }
                Err(kind) => {
                    return Err(fail(
                        Reason::PiiDetected,
                        format!(
                            "field {} looks like it contains {}; the event was not stored",
                            f.name(),
                            kind.describe()
                        ),
                    ))
                }
            };
            kept.push(k);
        }

        let Some(epoch) = self
            .keys
            .epoch_at(time)
            .filter(|e| e.keys.is_some())
            .map(|e| e.id)
        else {
            return Err(fail(
                Reason::EpochShredded,
                "the key period this time belongs to has been shredded or does not exist".into(),
            ));
        };
        if self.keys.opt_out_count() > 0 && idents.iter().any(|(_, i)| self.keys.opted_out(i)) {
            return Err(fail(Reason::OptedOut, OPTED_OUT.into()));
        }
        let dedupe = env
            .id
            .as_ref()
            .map(|id| self.keys.dedupe_key(&source.name, id))
            .or(content);

        // Pseudonyms, then produce: the staging row and the contributions.
        let mut pseudonyms: smallvec::SmallVec<[Pseudonym; 4]> = Default::default();
        for (fi, ident) in &idents {
            let (_, p) = self
                .keys
                .pseudonym_at(time, ident)
                .expect("epoch checked above");
            pseudonyms.push(p);
            kept[*fi] = Kept::Pseudonym(p);
        }
        // Staging row: time, then retained values in field order (see [`staging`]).
        let payload = &mut out.payloads;
        staging::put_time(payload, time);
        for (f, k) in coll.fields.iter().zip(&kept) {
            if f.is_retained() {
                k.write(payload, f.decimals());
            }
        }

        let contributions = &mut out.contributions;
        for (mi, m) in coll.metrics.iter().enumerate() {
            let g = self.metric_base[ci] + mi as u32;
            let wstart = window::start(m.window, time);
            let Some(at) = idents.iter().position(|(fi, _)| *fi == m.contributor) else {
                continue;
            };
            let Some(contributor) = self.keys.contributor(
                &self.metric_keys[g as usize],
                wstart,
                &idents[at].1,
                (epoch, pseudonyms[at]),
            ) else {
                // The key period the window started in is shredded (the purge waits for
                // the window's seal, so only a door with a stale key ring gets here):
                // refuse the event whole rather than accept it and not count it.
                out.abandon();
                return Err(fail(Reason::EpochShredded, WINDOW_SHREDDED.into()));
            };
            let mut group = compact_str::CompactString::const_new("");
            for (i, &bi) in m.by.iter().enumerate() {
                if i > 0 {
                    group.push(GROUP_SEP);
                }
                kept[bi].group_value(&mut group);
            }
            let (bin, value) = match m.kind {
                MetricKind::Count | MetricKind::Distinct => (-1, 1),
                MetricKind::Sum | MetricKind::Mean | MetricKind::Histogram => {
                    let Kept::Int(x) = kept[m.field.expect("compiled")] else {
                        continue;
                    };
                    if m.kind == MetricKind::Histogram {
                        let last = m.bins.len() - 2;
                        let b = m
                            .bins
                            .windows(2)
                            .position(|w| x >= w[0] && x < w[1])
                            .unwrap_or(if x >= m.bins[last + 1] { last } else { 0 });
                        (b as i32, 1)
                    } else {
                        (-1, x)
                    }
                }
            };
            contributions.push(Contribution {
                metric: g,
                window_start: wstart,
                group,
                contributor,
                bin,
                value,
            });
        }
        out.seal_event(ci, epoch, time, dedupe, had_id, clamped, redacted, dropped);
        Ok(())
    }

    fn check_value<'v>(
        &self,
        f: &Field,
        v: &Value<'v>,
        clamped: &mut u32,
    ) -> Result<Option<V<'v>>, (Reason, String)> {
        let wrong = |what: &str| {
            (
                Reason::WrongType,
                format!("field {} must be {what}", f.name()),
            )
        };
        if matches!(v, Value::Null) {
            return Ok(None);
        }
        let out = match f.ty() {
            FieldType::String => {
                let Value::Str(s) = v else {
                    return Err(wrong("a string"));
                };
                if s.len() > self.limits.max_string_bytes {
                    return Err((
                        Reason::TooLong,
                        format!(
                            "field {} is longer than the {} byte limit",
                            f.name(),
                            self.limits.max_string_bytes
                        ),
                    ));
                }
                if let Some(ml) = f.max_length() {
                    if s.chars().count() > ml as usize {
                        return Err((
                            Reason::TooLong,
                            format!(
                                "field {} is longer than its declared max_length {ml}",
                                f.name()
                            ),
                        ));
                    }
                }
                if let Some(values) = &f.values() {
                    if !values.iter().any(|x| x == s) {
                        return Err((
                            Reason::ValueNotAllowed,
                            format!("field {} has a value outside its declared values", f.name()),
                        ));
                    }
                }
                if s.bytes().any(|b| b == GROUP_SEP as u8) {
                    return Err((
                        Reason::ValueNotAllowed,
                        format!("field {} contains a control character", f.name()),
                    ));
                }
                V::Str(s.clone())
            }
            FieldType::Integer | FieldType::Number => {
                let scale = 10f64.powi(f.decimals() as i32);
                let x: i64 = match (f.ty(), v) {
                    (_, Value::Int(i)) => {
                        i.checked_mul(10i64.pow(f.decimals())).ok_or_else(|| {
                            (
                                Reason::OutOfRange,
                                format!("field {} is out of range", f.name()),
                            )
                        })?
                    }
                    (FieldType::Integer, Value::Float(x))
                        if x.fract() == 0.0 && x.abs() < 9.0e15 =>
                    {
                        *x as i64
                    }
                    (FieldType::Number, Value::Float(x))
                        if x.is_finite() && (x * scale).abs() < 9.0e15 =>
                    {
                        (x * scale).round() as i64
                    }
                    (FieldType::Integer, Value::Float(x)) if x.is_finite() && x.fract() != 0.0 => {
                        return Err(wrong("an integer"))
                    }
                    (_, Value::BigUint(_)) | (_, Value::Float(_)) => {
                        return Err((
                            Reason::OutOfRange,
                            format!("field {} is out of range", f.name()),
                        ))
                    }
                    _ => {
                        return Err(wrong(if f.ty() == FieldType::Integer {
                            "an integer"
                        } else {
                            "a number"
                        }))
                    }
                };
                let (lo, hi) = (f.min().unwrap_or(i64::MIN), f.max().unwrap_or(i64::MAX));
                let x = if x < lo || x > hi {
                    match f.out_of_range() {
                        OutOfRange::Reject => {
                            return Err((
                                Reason::OutOfRange,
                                format!("field {} is outside its declared min and max", f.name()),
                            ))
                        }
                        OutOfRange::Clamp => {
                            *clamped += 1;
                            x.clamp(lo, hi)
                        }
                    }
                } else {
                    x
                };
                V::Int(x)
            }
            FieldType::Boolean => match v {
                Value::Bool(b) => V::Bool(*b),
                _ => return Err(wrong("true or false")),
            },
            FieldType::Timestamp => match v {
                Value::Str(s) => V::Ts(
                    DateTime::parse_from_rfc3339(s)
                        .map_err(|_| wrong("an RFC 3339 timestamp"))?
                        .timestamp(),
                ),
                _ => return Err(wrong("an RFC 3339 timestamp")),
            },
            FieldType::Ip => match v {
                Value::Str(s) => V::Ip(s.parse().map_err(|_| wrong("an IP address"))?),
                _ => return Err(wrong("an IP address")),
            },
        };
        Ok(Some(out))
    }
}

/// Unix seconds of an RFC 3339 time. The canonical `YYYY-MM-DDTHH:MM:SSZ` form is read
/// by hand (it is nearly every event); anything else goes through chrono.
fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let canonical = b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't')
        && b[13] == b':'
        && b[16] == b':'
        && (b[19] == b'Z' || b[19] == b'z')
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&i| b[i].is_ascii_digit());
    if canonical {
        let n = |i: usize, len: usize| {
            b[i..i + len]
                .iter()
                .fold(0u32, |a, d| a * 10 + (d - b'0') as u32)
        };
        let (y, mo, d) = (i64::from(n(0, 4)), n(5, 2), n(8, 2));
        if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
            return None;
        }
        let (h, m, sec) = (n(11, 2), n(14, 2), n(17, 2));
        if h > 23 || m > 59 || sec > 60 {
            return None;
        }
        let days = days_from_civil(y, mo, d);
        return Some(days * 86_400 + (h * 3600 + m * 60 + sec.min(59)) as i64);
    }
    DateTime::parse_from_rfc3339(s).ok().map(|d| d.timestamp())
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`):
/// a dozen integer operations where chrono's date construction and difference were 2% of
/// the door.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12); // March is 0
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn truncate_time(t: i64, g: TimeGrain) -> i64 {
    match g {
        TimeGrain::Minute => t - t.rem_euclid(60),
        TimeGrain::Hour => t - t.rem_euclid(3600),
        TimeGrain::Day => t - t.rem_euclid(86_400),
        TimeGrain::Week => {
            let d = t - t.rem_euclid(86_400);
            let wd = DateTime::from_timestamp(d, 0)
                .map(|x| x.weekday().num_days_from_monday() as i64)
                .unwrap_or(0);
            d - wd * 86_400
        }
    }
}

/// The retained network of an address (`a.b.c.0/24` or `a:b:c::/48`), written into a
/// stack buffer: `format!` here was 5% of the door's time.
struct Network {
    buf: [u8; 32],
    len: usize,
}

impl Network {
    fn of(ip: &IpAddr) -> Self {
        let mut n = Network {
            buf: [0; 32],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for o in &v4.octets()[..3] {
                    n.push(itoa::Buffer::new().format(*o).as_bytes());
                    n.push(b".");
                }
                n.push(b"0/24");
            }
            IpAddr::V6(v6) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                for seg in &v6.segments()[..3] {
                    let digits = [seg >> 12, (seg >> 8) & 15, (seg >> 4) & 15, seg & 15];
                    let skip = digits.iter().take(3).take_while(|&&d| d == 0).count();
                    for &d in &digits[skip..] {
                        n.push(&[HEX[d as usize]]);
                    }
                    n.push(b":");
                }
                n.push(b":/48");
            }
        }
        n
    }

    fn push(&mut self, b: &[u8]) {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("ASCII")
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, written by hand: chrono's formatter was a visible share of
/// the door's time for policies that generalize timestamps.
pub(crate) fn rfc3339(t: i64) -> String {
    use chrono::Timelike;
    let Some(d) = DateTime::from_timestamp(t, 0) else {
        return String::new();
    };
    let mut b = [0u8; 20];
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    let y = d.year();
    if !(0..=9999).contains(&y) {
        return d.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    }
    put(0, 4, y as u32);
    put(5, 2, d.month());
    put(8, 2, d.day());
    put(11, 2, d.hour());
    put(14, 2, d.minute());
    put(17, 2, d.second());
    for (i, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'Z'),
    ] {
        b[i] = c;
    }
    String::from_utf8(b.to_vec()).expect("ASCII")
}

/// What the door keeps of one field after its transform and the PII scan: the only
/// input of the staging row and of group keys. A raw value has no way into either: the
/// raw [`V`] is consumed by [`minimize`], and identifiers leave it only as pseudonyms.
enum Kept<'a> {
    /// Absent from the event, or dropped by the policy.
    Absent,
    Pseudonym(Pseudonym),
    /// A declared value, or a free-form string the scanner found clean.
    Str(Cow<'a, str>),
    /// Text that went through the redactor (`transform: redact`, or a string the scanner
    /// flagged under `on_pii: redact`): staged as redacted, never a group key.
    Redacted(Cow<'a, str>),
    /// An integer or scaled decimal, floored to its bucket when generalized.
    Int(i64),
    Bool(bool),
    /// Unix seconds, truncated when generalized.
    Ts(i64),
    /// An IP address is only ever kept as its network (written out as `a.b.c.0/24` or
    /// `a:b:c::/48` where it is used; kept small here).
    Network(IpAddr),
}

/// The fixed group a flagged or redacted value is counted under: the value itself never
/// becomes a group key.
pub const REDACTED_GROUP: &str = "[redacted]";

/// The door's verdict on one field.
enum Minimized<'a> {
    Kept(Kept<'a>),
    /// A direct identifier to pseudonymize (the only raw value that goes further, and only
    /// into the keyed hash).
    Identifier(Cow<'a, str>),
}

/// Applies a field's transform and, for retained free-form strings, the PII scan: the
/// whole of minimization for one value. `Err` names what an `on_pii: reject` field held.
fn minimize<'a>(
    f: &Field,
    v: Option<V<'a>>,
    redacted: &mut u32,
) -> Result<Minimized<'a>, pii::PiiKind> {
    let Some(v) = v else {
        return Ok(Minimized::Kept(Kept::Absent));
    };
    // By the field's handling, one of the legal (type, transform) pairs; the value was
    // typed by the same field's type, so any other pairing cannot occur.
    let k = match (f.handling(), v) {
        (Handling::Drop(_), _) => Kept::Absent,
        (Handling::Pseudonymize, V::Str(s)) => return Ok(Minimized::Identifier(s)),
        (Handling::Redact, V::Str(s)) => match pii::redact(&s) {
            Some(r) => {
                *redacted += 1;
                Kept::Redacted(Cow::Owned(r))
            }
            None => Kept::Redacted(s),
        },
        (Handling::KeepString, V::Str(s)) if f.values().is_some() => Kept::Str(s),
        (Handling::KeepString, V::Str(s)) => match f.on_pii() {
            OnPii::Reject => match pii::first(&s) {
                Some(kind) => return Err(kind),
                None => Kept::Str(s),
            },
            OnPii::Redact => match pii::redact(&s) {
                Some(r) => {
                    *redacted += 1;
                    Kept::Redacted(Cow::Owned(r))
                }
                None => Kept::Str(s),
            },
        },
        (Handling::Integer { bucket } | Handling::Number { bucket }, V::Int(x)) => {
            Kept::Int(bucket.map_or(x, |w| x - x.rem_euclid(w)))
        }
        (Handling::Boolean, V::Bool(b)) => Kept::Bool(b),
        (Handling::Timestamp { grain }, V::Ts(t)) => {
            Kept::Ts(grain.map_or(t, |g| truncate_time(t, g)))
        }
        (Handling::Network, V::Ip(ip)) => Kept::Network(ip),
        // A value whose type does not match its field's handling: `check_value` typed it
        // by the same field, so this is unreachable; keeping nothing is the safe answer.
        (_, _) => Kept::Absent,
    };
    Ok(Minimized::Kept(k))
}

impl Kept<'_> {
    /// Appends this value to a staging row.
    fn write(&self, out: &mut Vec<u8>, decimals: u32) {
        match self {
            Kept::Absent => staging::put_null(out),
            Kept::Pseudonym(p) => staging::put_pseudonym(out, p),
            Kept::Str(s) | Kept::Redacted(s) => staging::put_str(out, s),
            Kept::Int(x) => staging::put_int(out, *x, decimals),
            Kept::Bool(b) => staging::put_bool(out, *b),
            Kept::Ts(t) => staging::put_timestamp(out, *t),
            Kept::Network(ip) => staging::put_str(out, Network::of(ip).as_str()),
        }
    }

    /// Appends this value's group-key text. Redacted and flagged text counts under
    /// [`REDACTED_GROUP`]; a pseudonym is never a dimension (lint refuses it), and if one
    /// were it would group as `[pseudonym]`, not as itself.
    fn group_value(&self, out: &mut compact_str::CompactString) {
        match self {
            Kept::Absent => out.push_str("(none)"),
            Kept::Pseudonym(_) => out.push_str("[pseudonym]"),
            Kept::Str(s) => out.push_str(s),
            Kept::Redacted(_) => out.push_str(REDACTED_GROUP),
            Kept::Int(x) => out.push_str(itoa::Buffer::new().format(*x)),
            Kept::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Kept::Ts(t) => out.push_str(&rfc3339(*t)),
            Kept::Network(ip) => out.push_str(Network::of(ip).as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_time, rfc3339};

    #[test]
    fn hand_written_rfc3339_agrees_with_chrono() {
        for t in [
            0i64,
            1,
            59,
            86_399,
            951_782_400,
            1_763_800_000,
            -1,
            -86_401,
            253_402_300_799,
        ] {
            let want = chrono::DateTime::from_timestamp(t, 0)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            assert_eq!(rfc3339(t), want, "{t}");
            assert_eq!(parse_time(&want), Some(t));
        }
    }

    #[test]
    fn hand_written_network_agrees_with_format() {
        use std::net::IpAddr;
        for s in [
            "203.0.113.54",
            "0.0.0.0",
            "255.255.255.255",
            "10.1.22.3",
            "2001:db8:85a3::8a2e:370:7334",
            "::1",
            "fe80:0:ab::1",
            "ffff:ffff:ffff:ffff::",
            "1:20:300::",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            let want = match ip {
                IpAddr::V4(v) => {
                    let o = v.octets();
                    format!("{}.{}.{}.0/24", o[0], o[1], o[2])
                }
                IpAddr::V6(v) => {
                    let g = v.segments();
                    format!("{:x}:{:x}:{:x}::/48", g[0], g[1], g[2])
                }
            };
            assert_eq!(super::Network::of(&ip).as_str(), want, "{s}");
        }
    }

    proptest::proptest! {
        /// Every canonical date and time, valid or not (month 0–13, day 0–32, leap years,
        /// years 0000–9999), reads as chrono reads it.
        #[test]
        fn hand_written_calendar_agrees_with_chrono(
            y in 0u32..10_000, mo in 0u32..14, d in 0u32..33, h in 0u32..25, mi in 0u32..61, sec in 0u32..60,
        ) {
            let s = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}Z");
            let want = chrono::DateTime::parse_from_rfc3339(&s).ok().map(|d| d.timestamp());
            proptest::prop_assert_eq!(parse_time(&s), want, "{}", s);
        }
    }

    #[test]
    fn fast_time_path_agrees_with_chrono() {
        for s in [
            "2026-11-20T10:00:00Z",
            "1999-12-31T23:59:59Z",
            "2024-02-29T00:00:00Z",
            "1969-07-20T20:17:40Z",
        ] {
            assert_eq!(
                parse_time(s),
                chrono::DateTime::parse_from_rfc3339(s)
                    .ok()
                    .map(|d| d.timestamp()),
                "{s}"
            );
        }
        for bad in [
            "2026-02-30T10:00:00Z",
            "2026-11-20T24:00:00Z",
            "2026-11-20 10:00:00",
            "yesterday",
            "2026-11-20T10:00:0xZ",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(
            parse_time("2026-11-20T11:00:00+01:00"),
            parse_time("2026-11-20T10:00:00Z")
        );
    }
}
