//! Epoch keys as the door uses them: secrets that will not print themselves, and HMAC
//! states keyed once so each pseudonym costs one compression pass, not a key schedule.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// 32 secret bytes. `Debug` prints nothing of them.
#[derive(Clone)]
pub struct Secret(pub [u8; 32]);

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
    pub keys: Option<EpochKeys>,
}

/// The two secrets of an epoch: one for pseudonyms, one for staging encryption.
#[derive(Debug, Clone)]
pub struct EpochKeys {
    pub hmac: Secret,
    pub data: Secret,
}

/// A pseudonym: 16 bytes of `HMAC-SHA256(epoch_key, identifier)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pseudonym(pub [u8; 16]);

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

    /// The same encoding into a stack buffer, for hot paths.
    pub fn encode_into(&self, out: &mut [u8; 22]) {
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode_slice(self.0, out)
            .expect("16 bytes encode to 22");
        debug_assert_eq!(n, 22);
    }
}

/// Per-epoch key material the door uses on every event, derived once.
#[derive(Clone)]
struct Derived {
    /// HMAC-SHA256 state keyed with the epoch's pseudonym key (ipad/opad absorbed).
    mac: HmacSha256,
    /// SipHash-2-4 key for deduplication digests, derived from the same epoch key, so
    /// shredding the epoch makes its stored digests unlinkable too.
    dedupe: [u8; 16],
}

/// The epochs with precomputed HMAC states, ordered by start.
#[derive(Clone)]
pub struct KeyRing {
    epochs: Vec<(Epoch, Option<Derived>)>,
}

impl KeyRing {
    /// Builds the ring; epochs may come in any order.
    pub fn new(mut epochs: Vec<Epoch>) -> Self {
        epochs.sort_by_key(|e| e.start);
        let epochs = epochs
            .into_iter()
            .map(|e| {
                let derived = e.keys.as_ref().map(|k| {
                    let mac =
                        HmacSha256::new_from_slice(&k.hmac.0).expect("HMAC takes any key length");
                    let mut d = mac.clone();
                    d.update(b"veil dedupe key v1");
                    let mut dedupe = [0u8; 16];
                    dedupe.copy_from_slice(&d.finalize().into_bytes()[..16]);
                    Derived { mac, dedupe }
                });
                (e, derived)
            })
            .collect();
        KeyRing { epochs }
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
    pub fn pseudonym_at(&self, t: i64, identifier: &[u8]) -> Option<(EpochId, Pseudonym)> {
        let i = self.index_at(t)?;
        let (e, d) = &self.epochs[i];
        Some((e.id, keyed(&d.as_ref()?.mac, b"p", identifier)))
    }

    /// A keyed digest for deduplication of (`source`, `id`) under the epoch's key, prefixed
    /// with the event's minute so that a time-ordered stream inserts at the end of the
    /// store's index instead of all over it. A retry repeats the event's time, so it maps
    /// to the same key; an id reused with another time is another event.
    ///
    /// The digest is SipHash-2-4 (a 128-bit-keyed PRF built for short inputs) rather than
    /// HMAC-SHA256: it only has to be unguessable and collision-free without the key, and
    /// it costs a tenth of the HMAC's two SHA-256 compressions on the hot path.
    pub fn dedupe_key(&self, t: i64, source: &str, id: &str) -> Option<[u8; 16]> {
        use siphasher::sip128::Hasher128;
        use std::hash::Hasher;
        let (_, d) = &self.epochs[self.index_at(t)?];
        let mut h = siphasher::sip128::SipHasher24::new_with_key(&d.as_ref()?.dedupe);
        h.write(&(source.len() as u32).to_le_bytes());
        h.write(source.as_bytes());
        h.write(id.as_bytes());
        let out = h.finish128().as_bytes();
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&(t.div_euclid(60) as u32).to_be_bytes());
        k[4..].copy_from_slice(&out[..12]);
        Some(k)
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
