//! Principals and roles: who may call what. Tokens are compared as SHA-256 hashes only.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

pub use veil_access::{Action, Role};

/// One principal as the gateway knows it.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub roles: Vec<Role>,
    /// Collections a source may send; `None` = none (spec: omitted means none).
    pub collections: Option<Vec<String>>,
    /// Collections on consent for which this source attests it sends only events of
    /// people who consented.
    pub consent: Option<Vec<String>>,
    /// Hex SHA-256 of the bearer token.
    pub token_sha256: String,
    /// Hex SHA-256 of a client certificate (DER) that authenticates this principal over TLS.
    pub cert_sha256: Option<String>,
}

impl Principal {
    /// Whether the one authorization function lets this principal take `action`.
    pub fn may(&self, action: Action) -> bool {
        veil_access::authorize(veil_access::Caller::Principal(&self.roles), action).is_ok()
    }
}

/// Why a request was not let in. The text never repeats what the caller sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No credentials at all.
    Missing,
    /// A token or certificate that matches no principal.
    Unknown,
    /// A known principal without a role for this endpoint.
    Forbidden,
}

impl Denied {
    /// Machine-readable reason code.
    pub fn code(self) -> &'static str {
        match self {
            Denied::Missing => "unauthenticated",
            Denied::Unknown => "invalid_token",
            Denied::Forbidden => "forbidden",
        }
    }
}

/// Fingerprint of a client certificate presented over TLS, set by the TLS acceptor.
#[derive(Debug, Clone)]
pub struct ClientCert(pub String);

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Equal-time comparison of two hex digests, so response timing says nothing about how
/// much of a hash matched.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| {
            acc | (x.to_ascii_lowercase() ^ y.to_ascii_lowercase())
        }) == 0
}

/// Finds the principal behind a request: a bearer token, else a verified client certificate.
pub fn authenticate<'p>(
    principals: &'p [Principal],
    headers: &HeaderMap,
    cert: Option<&ClientCert>,
) -> Result<&'p Principal, Denied> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    if let Some(token) = bearer {
        let h = sha256_hex(token.as_bytes());
        return principals
            .iter()
            .find(|p| same(&p.token_sha256, &h))
            .ok_or(Denied::Unknown);
    }
    if let Some(ClientCert(fp)) = cert {
        return principals
            .iter()
            .find(|p| p.cert_sha256.as_deref().is_some_and(|c| same(c, fp)))
            .ok_or(Denied::Unknown);
    }
    if headers.contains_key(axum::http::header::AUTHORIZATION) {
        return Err(Denied::Unknown);
    }
    Err(Denied::Missing)
}

/// Authenticates and checks the action in one step.
pub fn authorize<'p>(
    principals: &'p [Principal],
    headers: &HeaderMap,
    cert: Option<&ClientCert>,
    action: Action,
) -> Result<&'p Principal, (Denied, Option<&'p Principal>)> {
    let p = authenticate(principals, headers, cert).map_err(|d| (d, None))?;
    if p.may(action) {
        Ok(p)
    } else {
        Err((Denied::Forbidden, Some(p)))
    }
}

/// SHA-256 of a DER certificate, as `cert_sha256` in `veil.toml` holds it.
pub fn cert_fingerprint(der: &[u8]) -> String {
    sha256_hex(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principals() -> Vec<Principal> {
        vec![Principal {
            name: "web".into(),
            roles: vec![Role::Source],
            collections: Some(vec!["app.feature_used".into()]),
            token_sha256: sha256_hex(b"s3cret"),
            cert_sha256: Some("ab".repeat(32)),
            consent: None,
        }]
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {t}").parse().unwrap());
        h
    }

    #[test]
    fn tokens_and_roles() {
        let ps = principals();
        assert_eq!(
            authenticate(&ps, &bearer("s3cret"), None).unwrap().name,
            "web"
        );
        assert_eq!(
            authenticate(&ps, &bearer("wrong"), None).unwrap_err(),
            Denied::Unknown
        );
        assert_eq!(
            authenticate(&ps, &HeaderMap::new(), None).unwrap_err(),
            Denied::Missing
        );
        let mut basic = HeaderMap::new();
        basic.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(
            authenticate(&ps, &basic, None).unwrap_err(),
            Denied::Unknown
        );
        assert!(authorize(&ps, &bearer("s3cret"), None, Action::Ingest).is_ok());
        assert_eq!(
            authorize(&ps, &bearer("s3cret"), None, Action::ReadAudit)
                .unwrap_err()
                .0,
            Denied::Forbidden
        );
        let cert = ClientCert("AB".repeat(32));
        assert_eq!(
            authenticate(&ps, &HeaderMap::new(), Some(&cert))
                .unwrap()
                .name,
            "web"
        );
        let other = ClientCert("cd".repeat(32));
        assert_eq!(
            authenticate(&ps, &HeaderMap::new(), Some(&other)).unwrap_err(),
            Denied::Unknown
        );
    }
}
