//! Epoch keys as the door uses them: secrets that will not print themselves, and HMAC
//! states keyed once so each pseudonym costs one compression pass, not a key schedule.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::borrow::Cow;

type HmacSha256 = Hmac<Sha256>;

/// 32 secret bytes. `Debug` prints nothing of them, and the bytes are reachable only
/// through [`Secret::expose`], a name a reviewer notices.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut k);
        Secret(k)
    }

    /// A secret read back from the vault.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Secret(bytes)
    }

    /// The raw bytes, for the vault that persists them and the ciphers that use them.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Identifies an epoch: the key period that pseudonyms and staging payloads belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpochId(pub u32);

/// One epoch as the vault hands it out. `keys` is `None` once the epoch is shredded.
#[derive(Debug, Clone)]
pub struct Epoch {
    pub id: EpochId,
    /// Event times in `[start, end)` belong to this epoch (unix seconds).
    pub start: i64,
    pub end: i64,
    /// When the keys were generated: automatic rotation counts from here.
    pub created_at: i64,
    /// When the keys were destroyed (crypto-shredding); `None` while they exist.
    pub shredded_at: Option<i64>,
    pub keys: Option<EpochKeys>,
}

/// The two secrets of an epoch: one for pseudonyms, one for staging encryption.
#[derive(Debug, Clone)]
pub struct EpochKeys {
    pub hmac: Secret,
    pub data: Secret,
}

/// A pseudonym: 16 bytes of `HMAC-SHA256(epoch_key, identifier)`. Only this crate makes
/// one or reads its bytes (into staging rows); elsewhere it is an opaque value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pseudonym([u8; 16]);

impl std::fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pseudonym({})", self.encode())
    }
}

impl Pseudonym {
    /// URL-safe base64 without padding (22 characters).
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0)
    }

    pub(crate) fn from_bytes(b: [u8; 16]) -> Self {
        Pseudonym(b)
    }

    pub(crate) fn bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// A person's id inside one metric's window: what per-contributor state and contribution
/// bounding count. Derived from the window's pseudonym under a separate per-epoch key
/// and bound to the metric and the window, so it equals no pseudonym and two metrics or
/// two windows never share one (their state cannot be joined across them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContributorId([u8; 16]);

impl ContributorId {
    /// The 16 bytes the store keeps (encrypted) in per-contributor state.
    pub fn bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// An id read back from stored state.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        ContributorId(b)
    }
}

/// One metric's contributor keys, per live epoch (see [`KeyRing::metric_keys`]).
#[derive(Clone, Default)]
pub struct MetricKeys(smallvec::SmallVec<[(usize, [u8; 16]); 4]>);

/// A direct identifier as the door received it, normalized so that one person is one
/// pseudonym (trim, Unicode NFKC, invisible characters removed, emails case-folded). It
/// has no accessor: the only thing anyone can do with it is pseudonymize it.
pub struct Identifier<'a>(Cow<'a, str>);

impl<'a> Identifier<'a> {
    /// Normalizes `raw` (or takes it as it is when the policy turned normalization off).
    pub fn new(raw: Cow<'a, str>, normalize: bool) -> Self {
        if !normalize {
            return Identifier(raw);
        }
        match crate::normalize::identifier(&raw, true) {
            Cow::Borrowed(b) if b.len() == raw.len() => Identifier(raw),
            other => Identifier(Cow::Owned(other.into_owned())),
        }
    }
}
/// The epochs with precomputed HMAC states, ordered by start, and the idempotency key.
#[derive(Clone)]
pub struct KeyRing {
    /// Each epoch with its keyed HMAC state and its contributor-id key (both `None` when
    /// the epoch is shredded).
    epochs: Vec<(Epoch, Option<(HmacSha256, [u8; 16])>)>,
    /// SipHash-2-4 key for idempotency digests, derived from the vault's dedupe secret.
    dedupe: [u8; 16],
    /// HMAC state for opt-out digests (derived from the same installation secret, not
    /// from an epoch: an opt-out must outlive every key rotation).
    opt_out_key: HmacSha256,
    /// Digests of the identifiers that opted out (see [`KeyRing::opt_out_digest`]).
    opt_outs: std::sync::Arc<std::collections::HashSet<[u8; 16]>>,
}

impl KeyRing {
    /// Builds the ring; epochs may come in any order. `dedupe` is the vault's idempotency
    /// secret: one for the store, not per epoch, because the spec counts a `(source, id)`
    /// once whatever time a retry carries — a key chosen by event time could not.
    pub fn new(mut epochs: Vec<Epoch>, dedupe: &Secret) -> Self {
        epochs.sort_by_key(|e| e.start);
        let epochs = epochs
            .into_iter()
            .map(|e| {
                let mac = e.keys.as_ref().map(|k| {
                    let mac =
                        HmacSha256::new_from_slice(&k.hmac.0).expect("HMAC takes any key length");
                    let mut c = mac.clone();
                    c.update(b"veil contributor key v1");
                    let mut ck = [0u8; 16];
                    ck.copy_from_slice(&c.finalize().into_bytes()[..16]);
                    (mac, ck)
                });
                (e, mac)
            })
            .collect();
        let mut d = HmacSha256::new_from_slice(&dedupe.0).expect("HMAC takes any key length");
        d.update(b"veil dedupe key v1");
        let mut key = [0u8; 16];
        key.copy_from_slice(&d.finalize().into_bytes()[..16]);
        let mut o = HmacSha256::new_from_slice(&dedupe.0).expect("HMAC takes any key length");
        o.update(b"veil opt-out key v1");
        let opt_out_key = HmacSha256::new_from_slice(&o.finalize().into_bytes())
            .expect("HMAC takes any key length");
        KeyRing {
            epochs,
            dedupe: key,
            opt_out_key,
            opt_outs: Default::default(),
        }
    }

    /// The ring with the opt-out list the door enforces: digests from
    /// [`KeyRing::opt_out_digest`], as the store keeps them.
    pub fn with_opt_outs(mut self, digests: impl IntoIterator<Item = [u8; 16]>) -> Self {
        self.opt_outs = std::sync::Arc::new(digests.into_iter().collect());
        self
    }

    /// The digest an opt-out of `identifier` is kept as: HMAC-SHA256 under a key derived
    /// from the installation's secret (in the vault), so it matches the person in every
    /// epoch, present and future, and says nothing without the vault.
    pub fn opt_out_digest(&self, identifier: &Identifier) -> [u8; 16] {
        keyed(&self.opt_out_key, b"o", identifier.0.as_bytes()).0
    }

    /// Whether `identifier` opted out (free when nobody did).
    pub fn opted_out(&self, identifier: &Identifier) -> bool {
        !self.opt_outs.is_empty() && self.opt_outs.contains(&self.opt_out_digest(identifier))
    }

    /// How many identifiers opted out.
    pub fn opt_out_count(&self) -> usize {
        self.opt_outs.len()
    }

    /// The epoch an event time belongs to, shredded or not.
    pub fn epoch_at(&self, t: i64) -> Option<&Epoch> {
        self.index_at(t).map(|i| &self.epochs[i].0)
    }

    fn index_at(&self, t: i64) -> Option<usize> {
        let i = self.epochs.partition_point(|(e, _)| e.start <= t);
        let i = i.checked_sub(1)?;
        (t < self.epochs[i].0.end).then_some(i)
    }

    /// Pseudonym of `identifier` under the key of the epoch containing `t`;
    /// `None` when that epoch is shredded or unknown.
    pub fn pseudonym_at(&self, t: i64, identifier: &Identifier) -> Option<(EpochId, Pseudonym)> {
        let i = self.index_at(t)?;
        let (e, keys) = &self.epochs[i];
        Some((
            e.id,
            keyed(&keys.as_ref()?.0, b"p", identifier.0.as_bytes()),
        ))
    }

    /// The contributor keys of one metric in every live epoch whose range ends after
    /// `from`: what [`KeyRing::contributor`] needs, derived once per door instead of once
    /// per event (hashing the metric's name per event was a visible share of the door).
    pub fn metric_keys(&self, metric: &str, from: i64) -> MetricKeys {
        use siphasher::sip128::Hasher128;
        use std::hash::Hasher;
        let mut out = MetricKeys::default();
        for (i, (e, keys)) in self.epochs.iter().enumerate() {
            let Some((_, ck)) = keys else { continue };
            if e.end <= from {
                continue;
            }
            let mut h = siphasher::sip128::SipHasher24::new_with_key(ck);
            h.write(metric.as_bytes());
            out.0.push((i, h.finish128().as_bytes()));
        }
        out
    }

    /// The contributor id of `identifier` in the window of a metric (its [`MetricKeys`])
    /// that starts at `window_start`: SipHash-2-4 (128 bits) under the metric's key in the
    /// epoch holding the window's start, of the window start and the person's pseudonym
    /// in that epoch. `event` is the pseudonym the door already computed with its epoch,
    /// reused when the window starts in the same epoch. `None` when that epoch is
    /// shredded, unknown, or older than the keys were derived for.
    pub fn contributor(
        &self,
        keys: &MetricKeys,
        window_start: i64,
        identifier: &Identifier,
        event: (EpochId, Pseudonym),
    ) -> Option<ContributorId> {
        let i = self.index_at(window_start)?;
        let (e, state) = &self.epochs[i];
        let p = if e.id == event.0 {
            event.1
        } else {
            keyed(&state.as_ref()?.0, b"p", identifier.0.as_bytes())
        };
        self.contributor_of_pseudonym(keys, window_start, p.0)
    }

    /// The keyed digest that deduplicates (`source`, `id`), and nothing else: the spec
    /// counts a `(source, id)` once even when a retry carries another time.
    ///
    /// The digest is SipHash-2-4 (a 128-bit-keyed PRF built for short inputs) rather than
    /// HMAC-SHA256: it only has to be unguessable and collision-free without the key, and
    /// it costs a tenth of the HMAC's two SHA-256 compressions on the hot path.
    pub fn dedupe_key(&self, source: &str, id: &str) -> [u8; 16] {
        use siphasher::sip128::Hasher128;
        use std::hash::Hasher;
        let mut h = siphasher::sip128::SipHasher24::new_with_key(&self.dedupe);
        h.write(&(source.len() as u32).to_le_bytes());
        h.write(source.as_bytes());
        h.write(id.as_bytes());
        h.finish128().as_bytes()
    }

    /// The contributor id a window pseudonym (as per-contributor state written before
    /// contributor ids held it) maps to: what [`KeyRing::contributor`] gives for the same
    /// person in the same window.
    pub fn contributor_of_pseudonym(
        &self,
        keys: &MetricKeys,
        window_start: i64,
        pseudonym: [u8; 16],
    ) -> Option<ContributorId> {
        use siphasher::sip128::Hasher128;
        use std::hash::Hasher;
        let i = self.index_at(window_start)?;
        let key = keys.0.iter().find(|(at, _)| *at == i)?.1;
        let mut h = siphasher::sip128::SipHasher24::new_with_key(&key);
        h.write(&window_start.to_le_bytes());
        h.write(&pseudonym);
        Some(ContributorId(h.finish128().as_bytes()))
    }

    /// The dedupe digest of an event without an id: its bytes and its position among the
    /// input's events. Not the source: the same file ingested by two accounts is the same
    /// events. Domain-separated from [`KeyRing::dedupe_key`] (a length marker no source
    /// name has), so no named id collides with it.
    pub fn content_dedupe_key(&self, position: u64, bytes: &[u8]) -> [u8; 16] {
        use siphasher::sip128::Hasher128;
        use std::hash::Hasher;
        let mut h = siphasher::sip128::SipHasher24::new_with_key(&self.dedupe);
        h.write(&u32::MAX.to_le_bytes());
        h.write(&position.to_le_bytes());
        h.write(bytes);
        h.finish128().as_bytes()
    }

    /// All epochs, oldest first.
    pub fn epochs(&self) -> impl Iterator<Item = &Epoch> {
        self.epochs.iter().map(|(e, _)| e)
    }
}

fn keyed(mac: &HmacSha256, domain: &[u8], data: &[u8]) -> Pseudonym {
    let mut m = mac.clone();
    m.update(domain);
    m.update(data);
    let out = m.finalize().into_bytes();
    let mut p = [0u8; 16];
    p.copy_from_slice(&out[..16]);
    Pseudonym(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(dedupe: u8) -> KeyRing {
        KeyRing::new(Vec::new(), &Secret([dedupe; 32]))
    }

    fn two_epochs() -> KeyRing {
        let e = |id, start, end, k: u8| Epoch {
            id: EpochId(id),
            start,
            end,
            created_at: start,
            shredded_at: None,
            keys: Some(EpochKeys {
                hmac: Secret([k; 32]),
                data: Secret([k ^ 0x55; 32]),
            }),
        };
        KeyRing::new(
            vec![e(1, i64::MIN, 1_000_000, 1), e(2, 1_000_000, i64::MAX, 2)],
            &Secret([9; 32]),
        )
    }

    #[test]
    fn contributor_ids_are_per_metric_and_window_and_equal_no_pseudonym() {
        let r = two_epochs();
        let id = Identifier::new(Cow::Borrowed("alice@example.com"), true);
        let mut seen = std::collections::HashSet::new();
        let mut pseudonyms = Vec::new();
        for t in [0i64, 500_000, 1_500_000] {
            pseudonyms.push(r.pseudonym_at(t, &id).unwrap().1);
        }
        for metric in ["builds", "build_duration"] {
            let mk = r.metric_keys(metric, i64::MIN);
            for w in [0i64, 86_400, 999_999, 1_000_000, 1_086_400] {
                let ev = r.pseudonym_at(w, &id).unwrap();
                let c = r.contributor(&mk, w, &id, ev).unwrap();
                assert!(seen.insert(c), "one id for two (metric, window) pairs");
                assert!(pseudonyms.iter().all(|p| p.0 != c.0));
                // The same person, metric and window: the same id, whichever epoch the
                // event itself fell in.
                let other_epoch_event = r.pseudonym_at(1_500_000, &id).unwrap();
                assert_eq!(r.contributor(&mk, w, &id, other_epoch_event), Some(c));
            }
        }
        // Another person differs.
        let bob = Identifier::new(Cow::Borrowed("bob@example.com"), true);
        let ev = r.pseudonym_at(0, &bob).unwrap();
        let mk = r.metric_keys("builds", i64::MIN);
        assert!(!seen.contains(&r.contributor(&mk, 0, &bob, ev).unwrap()));
        // Keys derived from a later instant do not reach back to older epochs.
        assert!(r
            .contributor(&r.metric_keys("builds", 1_500_000), 0, &bob, ev)
            .is_none());
        // A legacy window pseudonym maps to the same id the door derives now.
        let at0 = r.pseudonym_at(0, &bob).unwrap();
        assert_eq!(
            r.contributor_of_pseudonym(&mk, 0, at0.1 .0),
            r.contributor(&mk, 0, &bob, at0)
        );
    }

    #[test]
    fn dedupe_keys_separate_sources_ids_and_stores() {
        let r = ring(1);
        let k = r.dedupe_key("ingest", "abc");
        assert_eq!(k, r.dedupe_key("ingest", "abc"));
        assert_ne!(k, r.dedupe_key("other", "abc"));
        assert_ne!(k, r.dedupe_key("ingest", "abd"));
        // The source's length is hashed, so moving bytes between source and id differs.
        assert_ne!(r.dedupe_key("ab", "c"), r.dedupe_key("a", "bc"));
        assert_ne!(k, ring(2).dedupe_key("ingest", "abc"));
    }
}
