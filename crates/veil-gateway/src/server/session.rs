//! Dashboard sessions: a random id in an `HttpOnly`, `SameSite=Strict` cookie, kept here
//! only as its SHA-256 with the principal's name and two clocks (idle and absolute
//! expiry). A CSRF token is an HMAC of the session id under a key of this process, so a
//! form token cannot be made without the cookie it belongs to, and it is compared in
//! constant time.
//!
//! Sessions live in this process: a restart signs everyone out (the tokens stay valid).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// Most sessions held at once; past it the least recently used goes first.
const MAX_SESSIONS: usize = 10_000;

/// Most sessions of one principal (its browsers and tabs); past it that principal's least
/// recently used goes, so no principal can push another's sessions out.
const MAX_PER_PRINCIPAL: usize = 16;

/// How long a session lasts.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Unused this long, a session ends (seconds).
    pub idle: i64,
    /// A session ends this long after sign-in, used or not (seconds).
    pub max: i64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            idle: 30 * 60,
            max: 8 * 3600,
        }
    }
}

struct Entry {
    principal: String,
    created: i64,
    last: i64,
}

/// The sessions of this process.
pub struct Sessions {
    key: [u8; 32],
    limits: SessionLimits,
    map: Mutex<HashMap<[u8; 32], Entry>>,
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// A fresh random value for a cookie: 32 bytes, base64url.
pub fn random_id() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    B64.encode(b)
}

impl Sessions {
    /// An empty set with a fresh CSRF key.
    pub fn new(limits: SessionLimits) -> Sessions {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Sessions {
            key,
            limits,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The limits sessions run under.
    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Starts a session for `principal`; returns the cookie value.
    pub fn open(&self, principal: &str, now: i64) -> String {
        let id = random_id();
        let mut m = self.map.lock().expect("sessions lock");
        let limits = self.limits;
        m.retain(|_, e| live(e, limits, now));
        let own = m.values().filter(|e| e.principal == principal).count();
        let full = m.len() >= MAX_SESSIONS;
        if own >= MAX_PER_PRINCIPAL || full {
            // The principal's own oldest first; another's only when the table is full
            // and this principal holds none to give up.
            let victim = m
                .iter()
                .filter(|(_, e)| e.principal == principal)
                .min_by_key(|(_, e)| e.last)
                .or_else(|| full.then(|| m.iter().min_by_key(|(_, e)| e.last)).flatten())
                .map(|(k, _)| *k);
            if let Some(k) = victim {
                m.remove(&k);
            }
        }
        m.insert(
            digest(&id),
            Entry {
                principal: principal.to_owned(),
                created: now,
                last: now,
            },
        );
        id
    }

    /// The principal of a live session, which this use keeps alive; `None` for an unknown
    /// or expired one (an expired one is forgotten).
    pub fn get(&self, id: &str, now: i64) -> Option<String> {
        let d = digest(id);
        let mut m = self.map.lock().expect("sessions lock");
        let e = m.get_mut(&d)?;
        if !live(e, self.limits, now) {
            m.remove(&d);
            return None;
        }
        e.last = now;
        Some(e.principal.clone())
    }

    /// Ends a session (sign-out).
    pub fn close(&self, id: &str) {
        self.map.lock().expect("sessions lock").remove(&digest(id));
    }

    fn mac(&self, purpose: &[u8], id: &str) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        m.update(purpose);
        m.update(&[0]);
        m.update(id.as_bytes());
        m
    }

    /// The CSRF token of the session (or pre-session) cookie `id`.
    pub fn csrf(&self, purpose: &str, id: &str) -> String {
        B64.encode(self.mac(purpose.as_bytes(), id).finalize().into_bytes())
    }

    /// Whether `token` is the CSRF token of `id`, compared in constant time.
    pub fn check_csrf(&self, purpose: &str, id: &str, token: &str) -> bool {
        match B64.decode(token.as_bytes()) {
            Ok(t) => self.mac(purpose.as_bytes(), id).verify_slice(&t).is_ok(),
            Err(_) => false,
        }
    }
}

fn live(e: &Entry, l: SessionLimits, now: i64) -> bool {
    now - e.last < l.idle && now - e.created < l.max && now >= e.created
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_at_their_maximum() {
        let s = Sessions::new(SessionLimits { idle: 60, max: 300 });
        let id = s.open("viewer", 1000);
        assert_eq!(s.get(&id, 1059).as_deref(), Some("viewer"));
        // Each use keeps it alive...
        for t in (1100..1290).step_by(50) {
            assert_eq!(s.get(&id, t).as_deref(), Some("viewer"), "at {t}");
        }
        // ...until its absolute end.
        assert_eq!(s.get(&id, 1300), None);
        assert_eq!(s.get(&id, 1301), None, "an expired session is forgotten");
        let id = s.open("viewer", 2000);
        assert_eq!(s.get(&id, 2060), None, "idle past the limit");
        let id = s.open("viewer", 3000);
        s.close(&id);
        assert_eq!(s.get(&id, 3001), None, "signed out");
        assert_eq!(s.get("made-up", 3001), None);
        // A clock set back before the sign-in does not revive anything.
        let id = s.open("viewer", 4000);
        assert_eq!(s.get(&id, 3999), None);
    }

    #[test]
    fn one_principal_cannot_push_out_anothers_sessions() {
        let s = Sessions::new(SessionLimits::default());
        let b = s.open("b", 0);
        let first_a = s.open("a", 1);
        for t in 2..1000 {
            s.open("a", t);
        }
        assert_eq!(
            s.get(&b, 1000).as_deref(),
            Some("b"),
            "b's session survives a's flood"
        );
        assert_eq!(s.get(&first_a, 1000), None, "a's own oldest went");
        let live_a = s
            .map
            .lock()
            .unwrap()
            .values()
            .filter(|e| e.principal == "a")
            .count();
        assert_eq!(live_a, MAX_PER_PRINCIPAL);
    }

    #[test]
    fn csrf_tokens_belong_to_one_cookie_and_purpose() {
        let s = Sessions::new(SessionLimits::default());
        let a = s.open("a", 0);
        let b = s.open("b", 0);
        let t = s.csrf("session", &a);
        assert!(s.check_csrf("session", &a, &t));
        assert!(!s.check_csrf("session", &b, &t), "another session's token");
        assert!(!s.check_csrf("signin", &a, &t), "another purpose");
        assert!(!s.check_csrf("session", &a, ""));
        assert!(!s.check_csrf("session", &a, "%%%"));
        let other = Sessions::new(SessionLimits::default());
        assert!(
            !other.check_csrf("session", &a, &t),
            "another process's key"
        );
    }
}
