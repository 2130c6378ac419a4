//! `veil.toml`: where the data lives, which policy applies, who the principals are.
//! Paths inside it are relative to the file's own folder; `VEIL_*` variables override keys.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// `veil.toml` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub data_dir: String,
    pub policy: String,
    /// The key vault's directory: outside `data_dir`, backed up apart from it.
    #[serde(default = "default_vault")]
    pub vault: String,
    #[serde(default = "default_store")]
    pub store: String,
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_otlp")]
    pub otlp_listen: String,
    /// The OTLP/gRPC listener (`""` turns it off).
    #[serde(default = "default_otlp_grpc")]
    pub otlp_grpc_listen: String,
    #[serde(default)]
    pub principal: Vec<Principal>,
    #[serde(default)]
    pub limits: LimitsConfig,
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub dashboard: DashboardRaw,
}

/// `[dashboard]`: how long sign-ins last, and whether "what is collected about me" is
/// readable without one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardRaw {
    /// A session unused this long ends (`30m`).
    pub session_idle: String,
    /// A session ends this long after sign-in, used or not (`8h`).
    pub session_max: String,
    /// Serve `/about` (what is collected, why, for how long) without sign-in.
    pub about_public: bool,
    /// Cookies `Secure` behind a TLS-terminating proxy.
    pub secure_cookies: bool,
}

impl Default for DashboardRaw {
    fn default() -> Self {
        DashboardRaw {
            session_idle: "30m".into(),
            session_max: "8h".into(),
            about_public: false,
            secure_cookies: false,
        }
    }
}

/// `[audit]`: where the gateway anchors the audit head, outside the data directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// A file (relative to `veil.toml`; not inside `data_dir`) the gateway appends each
    /// new head to, as one JSON line; `veil audit verify` checks it too.
    pub anchor_file: Option<PathBuf>,
    /// A command the gateway runs with each new head as one JSON line on stdin (e.g.
    /// `["logger", "-t", "veil-anchor"]`, or a script that commits to a git repository).
    pub anchor_command: Option<Vec<String>>,
    /// At most one anchor per this many seconds (at least 60).
    pub anchor_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            anchor_file: None,
            anchor_command: None,
            anchor_interval_secs: 60,
        }
    }
}

/// `[limits]`: the gateway's limits and backpressure (all optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub max_events_per_request: usize,
    pub queue_events: usize,
    pub ingest_concurrency: usize,
    pub source_events_per_sec: f64,
    pub source_burst: f64,
    pub request_timeout_secs: u64,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = veil_gateway::server::ServerLimits::default();
        LimitsConfig {
            max_body_bytes: d.max_body_bytes,
            max_events_per_request: d.max_events_per_request,
            queue_events: d.queue_events,
            ingest_concurrency: d.ingest_concurrency,
            source_events_per_sec: d.source_events_per_sec,
            source_burst: d.source_burst,
            request_timeout_secs: d.request_timeout.as_secs(),
            max_connections: d.max_connections,
            max_connections_per_ip: d.max_connections_per_ip,
        }
    }
}

/// `[tls]`: serve HTTPS (paths relative to `veil.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: String,
    pub key: String,
    pub client_ca: Option<String>,
    #[serde(default)]
    pub client_cert_required: bool,
}

fn default_vault() -> String {
    "vault".into()
}
fn default_store() -> String {
    "sqlite".into()
}
fn default_listen() -> String {
    "127.0.0.1:8700".into()
}
fn default_otlp() -> String {
    "127.0.0.1:4318".into()
}
fn default_otlp_grpc() -> String {
    "127.0.0.1:4317".into()
}

/// One principal: a name, roles, and the SHA-256 of its bearer token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    pub name: String,
    pub roles: Vec<String>,
    pub collections: Option<Vec<String>>,
    /// Collections with `lawful_basis: consent` for which this source attests it sends
    /// only events of people who consented; events of others are refused.
    pub consent: Option<Vec<String>>,
    pub token_sha256: String,
    /// Hex SHA-256 of a client certificate (DER) that also authenticates this principal.
    pub cert_sha256: Option<String>,
}

/// A loaded configuration with absolute paths.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub data_dir: PathBuf,
    /// The key vault's directory (spec §2 Zones): never inside `data_dir`.
    pub vault: PathBuf,
    pub policy: PathBuf,
    pub store: String,
    pub listen: String,
    pub otlp_listen: String,
    pub otlp_grpc_listen: String,
    pub principals: Vec<Principal>,
    pub limits: LimitsConfig,
    /// TLS files, resolved against the config's folder.
    pub tls: Option<veil_gateway::server::tls::TlsConfig>,
    /// `[audit]`, with the anchor file resolved against the config's folder.
    pub audit: AuditConfig,
    /// `[dashboard]`, checked.
    pub dashboard: veil_gateway::server::DashboardConfig,
}

/// Hex SHA-256 of a token: the only form in which tokens are kept.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `path` lies inside `dir`, comparing canonical paths where they exist (so
/// `..` and symlinks cannot hide an anchor inside the data directory).
fn inside(path: &Path, dir: &Path) -> bool {
    let canon = |p: &Path| -> PathBuf {
        // Canonicalize the deepest existing ancestor and keep the rest as written.
        let mut rest = Vec::new();
        let mut cur = p.to_path_buf();
        loop {
            if let Ok(c) = cur.canonicalize() {
                return rest
                    .into_iter()
                    .rev()
                    .fold(c, |acc: PathBuf, part| acc.join(part));
            }
            match (cur.file_name().map(|f| f.to_owned()), cur.parent()) {
                (Some(f), Some(parent)) => {
                    rest.push(f);
                    cur = parent.to_path_buf();
                }
                _ => return p.to_path_buf(),
            }
        }
    };
    canon(path).starts_with(canon(dir))
}

/// Line (1-based) where `needle` is set as a key (`needle = …`) or appears quoted.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            (t.starts_with(needle) && t[needle.len()..].trim_start().starts_with('='))
                || l.contains(&format!("\"{needle}\""))
        })
        .map(|i| i + 1)
        .unwrap_or(0)
}

impl Config {
    /// Finds the config: `--config`, else `VEIL_CONFIG`, else `./veil.toml`.
    pub fn locate(explicit: Option<&Path>) -> PathBuf {
        explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("VEIL_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("veil.toml"))
    }

    /// Reads, overrides from the environment and validates, reporting every problem at once.
    pub fn load(file: &Path) -> Result<Config> {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let looked = std::env::current_dir()
                    .map(|d| d.join(file))
                    .unwrap_or_else(|_| file.to_path_buf());
                bail!(
                    "no Veil configuration at {}: run `veil init [DIR]` to make one, or point at yours with --config FILE or VEIL_CONFIG",
                    looked.display()
                );
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read config {}", file.display()))
            }
        };
        let at = |span: Option<std::ops::Range<usize>>| {
            span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0)
        };
        let fail = |e: toml::de::Error| {
            anyhow::anyhow!("{}:{}: {}", file.display(), at(e.span()), e.message())
        };
        // Syntax first (one error: the parser cannot go on), then every key problem at once.
        let table: toml::Table = text.parse().map_err(fail)?;
        const TOP: &[&str] = &[
            "data_dir",
            "policy",
            "vault",
            "store",
            "listen",
            "otlp_listen",
            "otlp_grpc_listen",
            "principal",
            "limits",
            "tls",
            "audit",
            "dashboard",
        ];
        const PRINCIPAL: &[&str] = &[
            "name",
            "roles",
            "collections",
            "consent",
            "token_sha256",
            "cert_sha256",
        ];
        const LIMITS: &[&str] = &[
            "max_body_bytes",
            "max_events_per_request",
            "queue_events",
            "ingest_concurrency",
            "source_events_per_sec",
            "source_burst",
            "request_timeout_secs",
            "max_connections",
            "max_connections_per_ip",
        ];
        const TLS: &[&str] = &["cert", "key", "client_ca", "client_cert_required"];
        const AUDIT: &[&str] = &["anchor_file", "anchor_command", "anchor_interval_secs"];
        const DASHBOARD: &[&str] = &[
            "session_idle",
            "session_max",
            "about_public",
            "secure_cookies",
        ];
        let mut problems = Vec::new();
        for k in table.keys().filter(|k| !TOP.contains(&k.as_str())) {
            problems.push(format!(
                "{}:{}: unknown key {k}; expected one of {}",
                file.display(),
                line_of(&text, k),
                TOP.join(", ")
            ));
        }
        if let Some(toml::Value::Array(ps)) = table.get("principal") {
            for t in ps.iter().filter_map(toml::Value::as_table) {
                for k in t.keys().filter(|k| !PRINCIPAL.contains(&k.as_str())) {
                    problems.push(format!(
                        "{}:{}: unknown key {k} in [[principal]]; expected one of {}",
                        file.display(),
                        line_of(&text, k),
                        PRINCIPAL.join(", ")
                    ));
                }
            }
        }
        for (section, allowed) in [
            ("limits", LIMITS),
            ("tls", TLS),
            ("audit", AUDIT),
            ("dashboard", DASHBOARD),
        ] {
            if let Some(toml::Value::Table(t)) = table.get(section) {
                for k in t.keys().filter(|k| !allowed.contains(&k.as_str())) {
                    problems.push(format!(
                        "{}:{}: unknown key {k} in [{section}]; expected one of {}",
                        file.display(),
                        line_of(&text, k),
                        allowed.join(", ")
                    ));
                }
            }
        }
        for k in ["data_dir", "policy"]
            .into_iter()
            .filter(|k| !table.contains_key(*k))
        {
            problems.push(format!("{}: missing key {k}", file.display()));
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("\n"));
        }
        let mut raw: RawConfig = toml::from_str(&text).map_err(fail)?;
        for (var, slot) in [
            ("VEIL_DATA_DIR", &mut raw.data_dir),
            ("VEIL_POLICY", &mut raw.policy),
            ("VEIL_VAULT", &mut raw.vault),
            ("VEIL_STORE", &mut raw.store),
            ("VEIL_LISTEN", &mut raw.listen),
            ("VEIL_OTLP_LISTEN", &mut raw.otlp_listen),
            ("VEIL_OTLP_GRPC_LISTEN", &mut raw.otlp_grpc_listen),
        ] {
            if let Ok(v) = std::env::var(var) {
                *slot = v;
            }
        }
        let mut errors = Vec::new();
        let mut names = std::collections::HashSet::new();
        for p in &raw.principal {
            let at = line_of(&text, &format!("\"{}\"", p.name));
            if !names.insert(p.name.clone()) {
                errors.push(format!(
                    "{}:{at}: principal {} is declared twice",
                    file.display(),
                    p.name
                ));
            }
            for r in &p.roles {
                if veil_access::Role::parse(r).is_none() {
                    errors.push(format!(
                        "{}:{at}: principal {} has unknown role {r}; roles are {}",
                        file.display(),
                        p.name,
                        veil_access::Role::ALL.map(|r| r.as_str()).join(", ")
                    ));
                }
            }
            if p.token_sha256.len() != 64 || !p.token_sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                errors.push(format!("{}:{at}: principal {}: token_sha256 must be 64 hex characters (the SHA-256 of the token, never the token)", file.display(), p.name));
            }
            if let Some(consent) = &p.consent {
                let sends = p.collections.as_deref().unwrap_or(&[]);
                for c in consent.iter().filter(|c| !sends.contains(c)) {
                    errors.push(format!(
                        "{}:{at}: principal {}: consent names {c}, which it may not send (add it to collections)",
                        file.display(),
                        p.name
                    ));
                }
            }
            if let Some(c) = &p.cert_sha256 {
                if c.len() != 64 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                    errors.push(format!("{}:{at}: principal {}: cert_sha256 must be 64 hex characters (the SHA-256 of the DER certificate)", file.display(), p.name));
                }
            }
        }
        if !(raw.store == "sqlite"
            || raw.store.starts_with("postgres://")
            || raw.store.starts_with("postgresql://"))
        {
            errors.push(format!(
                "{}:{}: store must be \"sqlite\" or a postgres:// URL",
                file.display(),
                line_of(&text, "store")
            ));
        }
        let base = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let data_dir = base.join(&raw.data_dir);
        let vault = base.join(&raw.vault);
        if inside(&vault, &data_dir) || inside(&data_dir, &vault) {
            errors.push(format!(
                "{}:{}: vault must lie outside data_dir (and data_dir outside it): a backup of the data must never hold the keys that shred it",
                file.display(),
                line_of(&text, "vault")
            ));
        }
        if let Some(a) = &raw.audit.anchor_file {
            if inside(&base.join(a), &data_dir) {
                errors.push(format!(
                    "{}:{}: [audit] anchor_file must lie outside data_dir: an anchor in the directory it protects proves nothing",
                    file.display(),
                    line_of(&text, "anchor_file")
                ));
            }
        }
        if raw
            .audit
            .anchor_command
            .as_ref()
            .is_some_and(|c| c.is_empty())
        {
            errors.push(format!(
                "{}:{}: [audit] anchor_command must name a program",
                file.display(),
                line_of(&text, "anchor_command")
            ));
        }
        if raw.audit.anchor_interval_secs < 60 {
            errors.push(format!(
                "{}:{}: [audit] anchor_interval_secs must be at least 60",
                file.display(),
                line_of(&text, "anchor_interval_secs")
            ));
        }
        // Sessions: at least a minute, at most a day; idle no longer than the maximum.
        let session = |key: &str, v: &str, errors: &mut Vec<String>| -> i64 {
            match veil_policy::duration::parse(v).filter(|d| (60..=86_400).contains(d)) {
                Some(d) => d,
                None => {
                    errors.push(format!(
                        "{}:{}: [dashboard] {key} must be a duration from 1m to 1d, like 30m or 8h",
                        file.display(),
                        line_of(&text, key)
                    ));
                    60
                }
            }
        };
        let idle = session("session_idle", &raw.dashboard.session_idle, &mut errors);
        let max = session("session_max", &raw.dashboard.session_max, &mut errors);
        if idle > max {
            errors.push(format!(
                "{}:{}: [dashboard] session_idle must not be longer than session_max",
                file.display(),
                line_of(&text, "session_idle")
            ));
        }
        if !errors.is_empty() {
            bail!("{}", errors.join("\n"));
        }
        let dashboard = veil_gateway::server::DashboardConfig {
            sessions: veil_gateway::server::session::SessionLimits { idle, max },
            about_public: raw.dashboard.about_public,
            secure_cookies: raw.dashboard.secure_cookies,
        };
        let mut audit = raw.audit;
        audit.anchor_file = audit.anchor_file.map(|a| base.join(a));
        Ok(Config {
            file: file.to_path_buf(),
            audit,
            dashboard,
            data_dir,
            vault,
            policy: base.join(&raw.policy),
            store: raw.store,
            listen: raw.listen,
            otlp_listen: raw.otlp_listen,
            otlp_grpc_listen: raw.otlp_grpc_listen,
            principals: raw.principal,
            limits: raw.limits,
            tls: raw.tls.map(|t| veil_gateway::server::tls::TlsConfig {
                cert: base.join(t.cert),
                key: base.join(t.key),
                client_ca: t.client_ca.map(|c| base.join(c)),
                client_cert_required: t.client_cert_required,
            }),
        })
    }

    /// The gateway's view of the principals (role names were validated at load).
    pub fn gateway_principals(&self) -> Vec<veil_gateway::server::auth::Principal> {
        use veil_gateway::server::auth::{Principal as P, Role};
        self.principals
            .iter()
            .map(|p| P {
                name: p.name.clone(),
                roles: p.roles.iter().filter_map(|r| Role::parse(r)).collect(),
                collections: p.collections.clone(),
                consent: p.consent.clone(),
                token_sha256: p.token_sha256.to_ascii_lowercase(),
                cert_sha256: p.cert_sha256.as_ref().map(|c| c.to_ascii_lowercase()),
            })
            .collect()
    }

    /// The gateway's limits from `[limits]`.
    pub fn server_limits(&self) -> veil_gateway::server::ServerLimits {
        let l = &self.limits;
        veil_gateway::server::ServerLimits {
            max_body_bytes: l.max_body_bytes,
            max_events_per_request: l.max_events_per_request,
            queue_events: l.queue_events,
            ingest_concurrency: l.ingest_concurrency,
            source_events_per_sec: l.source_events_per_sec,
            source_burst: l.source_burst,
            request_timeout: std::time::Duration::from_secs(l.request_timeout_secs),
            max_connections: l.max_connections,
            max_connections_per_ip: l.max_connections_per_ip,
            ..Default::default()
        }
    }

    /// The principal holding `token`, if any.
    pub fn principal_by_token(&self, token: &str) -> Option<&Principal> {
        let h = token_hash(token);
        self.principals
            .iter()
            .find(|p| p.token_sha256.eq_ignore_ascii_case(&h))
    }
}
