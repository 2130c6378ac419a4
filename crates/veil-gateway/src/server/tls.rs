//! TLS with rustls: a certificate and key from PEM files, and optionally client
//! certificates verified against a CA (a source may then authenticate by its certificate,
//! matched by `cert_sha256`, instead of a token).

use std::sync::Arc;
use tokio_rustls::rustls;

/// Where the PEM files are and whether clients must present a certificate.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// CA bundle for client certificates; `None` = no client certificates.
    pub client_ca: Option<std::path::PathBuf>,
    /// With a CA: refuse connections without a client certificate.
    pub client_cert_required: bool,
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Builds the acceptor, or says which file is wrong.
pub fn acceptor(cfg: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<_> = rustls_pemfile::certs(&mut &read(&cfg.cert)?[..])
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{} holds no valid PEM certificate", cfg.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", cfg.cert.display()));
    }
    let key = rustls_pemfile::private_key(&mut &read(&cfg.key)?[..])
        .ok()
        .flatten()
        .ok_or_else(|| format!("{} holds no PEM private key", cfg.key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut &read(ca)?[..]) {
                let c = c.map_err(|_| format!("{} holds an invalid certificate", ca.display()))?;
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let v = if cfg.client_cert_required {
                v
            } else {
                v.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| e.to_string())?)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not match: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
