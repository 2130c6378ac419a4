//! The embedded store: one SQLite database (WAL, full sync, secure delete) in the data
//! directory, plus `audit.head`, the newest audit entry's hash kept outside the database.

use crate::audit::{self, AuditEntry, Verification};
use crate::cells::Cell;
use crate::seal::{self, Bounds, ContribRow};
use crate::*;
use rand::SeedableRng;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use veil_pipeline::{staging, window, EpochKeys, Secret};
use veil_policy::MetricKind;

mod purge;
mod subject;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS staging_segments (
  id INTEGER PRIMARY KEY, collection TEXT NOT NULL, epoch INTEGER NOT NULL, day INTEGER NOT NULL,
  events INTEGER NOT NULL, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL, created_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS staging_segments_day ON staging_segments (collection, day);
CREATE TABLE IF NOT EXISTS staging_seen_runs (
  id INTEGER PRIMARY KEY, n INTEGER NOT NULL, min_minute INTEGER NOT NULL, max_minute INTEGER NOT NULL,
  keys BLOB NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS staging_contrib (
  id INTEGER PRIMARY KEY, metric TEXT NOT NULL, window_start INTEGER NOT NULL,
  rows INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS staging_contrib_window ON staging_contrib (metric, window_start);
CREATE TABLE IF NOT EXISTS opt_outs (digest BLOB PRIMARY KEY, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seal_state (metric TEXT PRIMARY KEY, sealed_before INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS aggregates (
  metric TEXT NOT NULL, grouping TEXT NOT NULL, window_start INTEGER NOT NULL, grp TEXT NOT NULL,
  contributors INTEGER NOT NULL, n INTEGER NOT NULL, total INTEGER NOT NULL, bins TEXT NOT NULL,
  sealed_at INTEGER NOT NULL, PRIMARY KEY (metric, grouping, window_start, grp));
CREATE TABLE IF NOT EXISTS quarantine (
  id INTEGER PRIMARY KEY, received_at INTEGER NOT NULL, source TEXT NOT NULL, reason TEXT NOT NULL,
  message TEXT NOT NULL, collection TEXT, field_names TEXT NOT NULL, late_day INTEGER);
CREATE INDEX IF NOT EXISTS quarantine_received ON quarantine (received_at);
CREATE TABLE IF NOT EXISTS releases (
  release_id TEXT PRIMARY KEY, query_key TEXT NOT NULL UNIQUE, principal TEXT NOT NULL,
  collection TEXT NOT NULL, epsilon REAL NOT NULL, created_at INTEGER NOT NULL, document TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS budget_ledger (
  principal TEXT NOT NULL, collection TEXT NOT NULL, period_start INTEGER NOT NULL,
  period_end INTEGER NOT NULL, spent_micro INTEGER NOT NULL,
  PRIMARY KEY (principal, collection, period_start, period_end));
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  detail TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_action ON audit (action, seq);
CREATE TABLE IF NOT EXISTS release_index (release_id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS release_windows (
  metric TEXT NOT NULL, grouping TEXT NOT NULL, window_start INTEGER NOT NULL, release_id TEXT NOT NULL,
  PRIMARY KEY (metric, grouping, window_start));
"#;

/// Largest staging arena kept for the next batch; a larger one (a huge group commit) is
/// given back.
const ARENA_KEPT: usize = 64 << 20;

/// The embedded SQLite store.
pub struct SqliteStore {
    conn: Connection,
    /// The epoch keys, kept apart from this database (see [`crate::vault`]).
    vault: Box<dyn Vault>,
    head_path: PathBuf,
    seen: crate::seen::SeenIndex,
    /// In-batch aggregation, kept between batches (see [`crate::cells`]).
    cells: crate::cells::Cells,
    /// Every staging segment of a batch, built and encrypted in one buffer that is kept
    /// between batches for the same reason (a fresh multi-megabyte buffer per batch was
    /// the last big source of page faults on the commit path).
    arena: Vec<u8>,
}

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn micro(eps: f64) -> i64 {
    (eps * 1e6).round() as i64
}

impl SqliteStore {
    /// The database file inside a data directory.
    pub fn db_path(data_dir: &Path) -> PathBuf {
        data_dir.join("veil.db")
    }

    /// Opens an initialized data directory with its vault (a directory outside it). A
    /// store made when keys still lived in the database moves them to a new vault at
    /// `vault_dir` on this first open, and wipes them from the database.
    pub fn open(data_dir: &Path, vault_dir: &Path) -> Result<Self> {
        let db = Self::db_path(data_dir);
        if !db.exists() {
            return Err(StoreError::NotInitialized);
        }
        Self::connect(data_dir, vault_dir, false)
    }

    /// Creates the data directory, schema, the vault with its first epoch (unless it
    /// exists) and the genesis audit entry.
    pub fn init(data_dir: &Path, vault_dir: &Path, now: i64, actor: &str) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.display().to_string(),
            source,
        })?;
        let mut s = Self::connect(data_dir, vault_dir, true)?;
        let has: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))?;
        if has == 0 {
            let epoch = s.vault.epochs()?.last().map(|e| e.id.0).unwrap_or_default();
            let tx = s
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let e = append_audit(
                &tx,
                actor,
                "init",
                &serde_json::json!({"epoch": epoch}),
                now,
            )?;
            tx.commit()?;
            s.write_head(&e)?;
        }
        Ok(s)
    }

    /// The vault this store's keys are in: the key ring of a store made before the
    /// vault moved out of the database is moved to a new vault, and a vault made for
    /// another data directory is refused.
    fn attach_vault(conn: &Connection, vault_dir: &Path, create: bool) -> Result<FileVault> {
        let now = chrono::Utc::now().timestamp();
        let legacy: bool = conn.query_row(
            "SELECT COUNT(*) = 1 FROM sqlite_master WHERE type = 'table' AND name = 'vault_epochs'",
            [],
            |r| r.get(0),
        )?;
        let meta = |key: &str| -> Result<Option<String>> {
            Ok(conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?)
        };
        let bound = meta("vault_id")?;
        let mut vault = if legacy {
            let keys = legacy_keys(conn)?;
            if FileVault::exists(vault_dir) {
                // Only a vault that already holds exactly these keys (a migration that
                // stopped before wiping them) may take over; any other would leave the
                // staged data unreadable once the keys are wiped below.
                let v = FileVault::open(vault_dir)?;
                if !v.holds(&keys)? {
                    return Err(StoreError::VaultMismatch(vault_dir.display().to_string()));
                }
                v
            } else {
                FileVault::adopt(vault_dir, &keys, now)?
            }
        } else if FileVault::exists(vault_dir) {
            FileVault::open(vault_dir)?
        } else if create && bound.is_none() {
            FileVault::create(vault_dir, now)?
        } else {
            return Err(StoreError::VaultMissing(vault_dir.display().to_string()));
        };
        let id = vault.id()?;
        if bound.as_deref().is_some_and(|b| b != id) {
            return Err(StoreError::VaultMismatch(vault_dir.display().to_string()));
        }
        // The data directory's own id, kept in the vault: one vault serves one store.
        let store_id = match meta("store_id")? {
            Some(s) => s,
            None => {
                let s = hex::encode(Secret::generate().expose());
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?1)",
                    [&s],
                )?;
                meta("store_id")?.unwrap_or(s)
            }
        };
        vault.bind_store(&store_id)?;
        if bound.is_none() {
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('vault_id', ?1)",
                [&id],
            )?;
        }
        if legacy {
            // The keys are in the vault now: drop them from the database, with secure
            // delete zeroing their pages, then fold the WAL back and truncate it so no
            // copy of them stays in any file of the data directory. A reader holding the
            // WAL open delays the truncation: wait for it, and fail rather than report a
            // migration whose old pages are still in the WAL.
            conn.execute_batch(
                "BEGIN IMMEDIATE; DROP TABLE IF EXISTS vault_epochs; DROP TABLE IF EXISTS vault_dedupe; COMMIT;",
            )?;
            conn.execute_batch("VACUUM;")?;
            let mut folded = false;
            for _ in 0..200 {
                let busy: i64 =
                    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
                if busy == 0 {
                    folded = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            if !folded {
                return Err(StoreError::Corrupt(
                    "the keys moved to the vault, but another process holds the database open, so their old pages are still in the WAL; stop it and run any veil command again".into(),
                ));
            }
        }
        Ok(vault)
    }

    fn connect(data_dir: &Path, vault_dir: &Path, create: bool) -> Result<Self> {
        let conn = Connection::open(Self::db_path(data_dir))?;
        // 16 KiB pages for a new store (an existing one keeps the size it was made with): an
        // ingest commit writes megabytes of segment and run blobs, each page costs SQLite two
        // writes and a checksum in the WAL and a copy at checkpoint, and four times fewer
        // pages cut the ingest path's CPU by about a tenth. Set before WAL mode fixes it.
        conn.execute_batch("PRAGMA page_size=16384;")?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=ON; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000;
             PRAGMA cache_size=-8192; PRAGMA mmap_size=0; PRAGMA temp_store=MEMORY;",
        )?;
        // A checkpoint every 64 MiB of WAL, whatever the page size.
        let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint={};",
            (64 << 20) / page.max(512)
        ))?;
        // A ledger made before charged periods had an end: its rows keep end 0 (a charge
        // of unknown extent; budgets count the audit chain's bound for those).
        // Checked under the write lock: a second process opening the same old store at
        // once must see the rebuilt table, not rebuild it again.
        let old_ledger =
            "SELECT COUNT(*) = 1 FROM sqlite_master WHERE type = 'table' AND name = 'budget_ledger'
             AND sql NOT LIKE '%period_end%'";
        if conn.query_row(old_ledger, [], |r| r.get::<_, bool>(0))? {
            conn.execute_batch("BEGIN IMMEDIATE;")?;
            let still: bool = conn.query_row(old_ledger, [], |r| r.get(0))?;
            if still {
                conn.execute_batch("ALTER TABLE budget_ledger RENAME TO budget_ledger_v1;")?;
                conn.execute_batch(SCHEMA)?;
                conn.execute_batch(
                    "INSERT INTO budget_ledger (principal, collection, period_start, period_end, spent_micro)
                       SELECT principal, collection, period_start, 0, spent_micro FROM budget_ledger_v1;
                     DROP TABLE budget_ledger_v1;",
                )?;
            }
            conn.execute_batch("COMMIT;")?;
        }
        conn.execute_batch(SCHEMA)?;
        // Quarantine made before late rejections kept their day: the column, once (an
        // older row's day is unknown).
        let no_late_day =
            "SELECT COUNT(*) = 0 FROM pragma_table_info('quarantine') WHERE name = 'late_day'";
        if conn.query_row(no_late_day, [], |r| r.get::<_, bool>(0))? {
            conn.execute_batch("BEGIN IMMEDIATE;")?;
            if conn.query_row(no_late_day, [], |r| r.get::<_, bool>(0))? {
                conn.execute_batch("ALTER TABLE quarantine ADD COLUMN late_day INTEGER;")?;
            }
            conn.execute_batch("COMMIT;")?;
        }
        let vault = Box::new(Self::attach_vault(&conn, vault_dir, create)?);
        let mut s = SqliteStore {
            conn,
            vault,
            head_path: data_dir.join("audit.head"),
            seen: Default::default(),
            cells: Default::default(),
            arena: Vec::new(),
        };
        s.bind_legacy_releases()?;
        s.index_legacy_windows()?;
        Ok(s)
    }

    /// A store made before releases were bound to the chain holds release entries
    /// without a document hash or a charge. Once, on the first open by this version, what
    /// it holds — every release and every ledger row — is recorded in one
    /// `binding_baseline` entry, so verification and budgets work from then on and any
    /// later change to those rows is caught.
    fn bind_legacy_releases(&mut self) -> Result<()> {
        let legacy: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM audit WHERE action = 'release' AND detail NOT LIKE '%\"document_sha256\"%'",
            [],
            |r| r.get(0),
        )?;
        let based: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM audit WHERE action = ?1",
            [audit::BASELINE],
            |r| r.get(0),
        )?;
        if legacy == 0 || based > 0 {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let releases: Vec<ReleaseRecord> = {
            let mut st = tx.prepare("SELECT release_id, query_key, principal, collection, epsilon, created_at, document FROM releases ORDER BY created_at, release_id")?;
            let rows = st.query_map([], release_row)?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        let baseline = audit::Baseline {
            releases: releases
                .iter()
                .map(|r| audit::ReleaseBinding {
                    release_id: r.release_id.clone(),
                    query_key: r.query_key.clone(),
                    document_sha256: audit::document_hash(&r.document),
                })
                .collect(),
            charges: ledger_rows(&tx)?
                .into_iter()
                .map(
                    |((principal, collection, period_start, end), epsilon_micro)| audit::Charge {
                        principal,
                        collection,
                        period_start,
                        period_end: (end != 0).then_some(end),
                        epsilon_micro,
                    },
                )
                .collect(),
        };
        let detail = serde_json::to_value(&baseline).expect("baselines serialize");
        let e = append_audit(
            &tx,
            "veil:upgrade",
            audit::BASELINE,
            &detail,
            chrono::Utc::now().timestamp(),
        )?;
        tx.commit()?;
        self.write_head(&e)
    }

    /// A store made before windows were indexed holds releases whose windows a new
    /// release would draw again (a fresh independent draw of the same data, charged as if
    /// new). Once, on the first open by this version, every such release's windows are
    /// indexed under it and recorded in one `window_baseline` entry: they are served as
    /// stored from then on, and `veil audit verify` binds them like any other.
    fn index_legacy_windows(&mut self) -> Result<()> {
        let done: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM audit WHERE action = ?1",
            [audit::WINDOW_BASELINE],
            |r| r.get(0),
        )?;
        // Every release made since is indexed: only an old store has unindexed releases.
        let unindexed: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM releases WHERE release_id NOT IN (SELECT release_id FROM release_windows)",
            [],
            |r| r.get(0),
        )?;
        if done > 0 || unindexed == 0 {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let done: i64 = tx.query_row(
            "SELECT COUNT(*) FROM audit WHERE action = ?1",
            [audit::WINDOW_BASELINE],
            |r| r.get(0),
        )?;
        if done > 0 {
            return Ok(());
        }
        let legacy: Vec<(String, String)> = {
            let mut st = tx.prepare(
                "SELECT release_id, document FROM releases WHERE release_id NOT IN (SELECT release_id FROM release_windows)
                 ORDER BY created_at, release_id",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        let mut baseline = audit::WindowBaseline {
            releases: Vec::new(),
        };
        for (id, document) in legacy {
            #[derive(serde::Deserialize)]
            struct Old {
                metric: String,
                by: Vec<String>,
                windows: Vec<String>,
                #[serde(default)]
                epsilon_per_window: Option<f64>,
            }
            let Ok(old) = serde_json::from_str::<Old>(&document) else {
                continue;
            };
            if old.epsilon_per_window.is_some() {
                continue;
            }
            let grouping = old.by.join(",");
            let mut starts = Vec::new();
            for start in old.windows.iter().filter_map(|l| window::parse_label(l)) {
                let n = tx.execute(
                    "INSERT OR IGNORE INTO release_windows (metric, grouping, window_start, release_id) VALUES (?1, ?2, ?3, ?4)",
                    params![old.metric, grouping, start, id],
                )?;
                if n == 1 {
                    starts.push(start);
                }
            }
            if !starts.is_empty() {
                baseline.releases.push((
                    id,
                    audit::WindowBinding {
                        metric: old.metric,
                        grouping,
                        starts,
                    },
                ));
            }
        }
        // Recorded even when empty, so the next open does not look (and lock) again.
        let detail = serde_json::to_value(&baseline).expect("baselines serialize");
        let e = append_audit(
            &tx,
            "veil:upgrade",
            audit::WINDOW_BASELINE,
            &detail,
            chrono::Utc::now().timestamp(),
        )?;
        tx.commit()?;
        self.write_head(&e)
    }

    /// Direct access to the database, for tests only (feature `test-access`): no code
    /// that ships reads or writes the store around its zones.
    #[cfg(feature = "test-access")]
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn write_head(&self, e: &AuditEntry) -> Result<()> {
        let tmp = self
            .head_path
            .with_extension(format!("head.{}.tmp", std::process::id()));
        let io = |source| StoreError::Io {
            path: self.head_path.display().to_string(),
            source,
        };
        std::fs::write(&tmp, format!("{} {}\n", e.seq, e.hash)).map_err(io)?;
        std::fs::rename(&tmp, &self.head_path).map_err(io)
    }

    fn read_head(&self) -> Option<(i64, String)> {
        let s = std::fs::read_to_string(&self.head_path).ok()?;
        let (a, b) = s.trim().split_once(' ')?;
        Some((a.parse().ok()?, b.to_owned()))
    }

    /// Idempotency ids held in memory: bounded by retention × rate, and what a purge
    /// shrinks (for `/metrics` and tests).
    pub fn idempotency_ids_in_memory(&self) -> usize {
        self.seen.keys_in_memory()
    }

    /// Decrypted staging events of one collection as `{"time", "attrs"}` JSON, for tests
    /// only (feature `test-access`); governed reads go through [`Store::staging_events`].
    #[cfg(feature = "test-access")]
    pub fn staging_payloads(&self, collection: &str, keys: &KeyRing) -> Result<Vec<String>> {
        Ok(self
            .staging_events(collection, keys)?
            .into_iter()
            .map(|e| serde_json::json!({"time": e.time, "attrs": e.attrs}).to_string())
            .collect())
    }
}

/// Per metric (policy order), the start of the first unsealed window.
pub(super) fn sealed_before_in(conn: &Connection, policy: &Policy) -> Result<Vec<i64>> {
    let mut st = conn.prepare_cached("SELECT sealed_before FROM seal_state WHERE metric = ?1")?;
    policy
        .metrics()
        .map(|(_, m)| {
            Ok(st
                .query_row([&m.name], |r| r.get(0))
                .optional()?
                .unwrap_or(i64::MIN))
        })
        .collect()
}

pub(super) fn segment_aad(collection: &str, epoch: u32, day: i64) -> Vec<u8> {
    format!("veil-staging\0{collection}\0{epoch}\0{day}").into_bytes()
}

fn append_audit(
    tx: &Transaction,
    actor: &str,
    action: &str,
    detail: &serde_json::Value,
    now: i64,
) -> Result<AuditEntry> {
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (seq, prev) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, audit::GENESIS.to_owned()),
    };
    let at = rfc3339(now);
    let detail = detail.to_string();
    let hash = audit::entry_hash(&prev, seq, &at, actor, action, &detail);
    tx.execute(
        "INSERT INTO audit (seq, at, actor, action, detail, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![seq, at, actor, action, detail, prev, hash],
    )?;
    Ok(AuditEntry {
        seq,
        at,
        actor: actor.into(),
        action: action.into(),
        detail,
        prev,
        hash,
    })
}

fn key32(v: Option<Vec<u8>>) -> Result<Option<Secret>> {
    match v {
        None => Ok(None),
        Some(b) => {
            let a: [u8; 32] = b
                .try_into()
                .map_err(|_| StoreError::Corrupt("a vault key has the wrong length".into()))?;
            Ok(Some(Secret::from_bytes(a)))
        }
    }
}

/// The keys a store made before the vault moved out kept in its own tables.
fn legacy_keys(conn: &Connection) -> Result<crate::vault::LegacyKeys> {
    let mut st = conn.prepare(
        "SELECT id, start_ts, end_ts, hmac_key, data_key, created_at, shredded_at FROM vault_epochs ORDER BY start_ts",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get::<_, Option<Vec<u8>>>(3)?,
            r.get::<_, Option<Vec<u8>>>(4)?,
            r.get(5)?,
            r.get::<_, Option<i64>>(6)?,
        ))
    })?;
    let mut epochs = Vec::new();
    for row in rows {
        let (id, start, end, h, d, created_at, shredded_at) = row?;
        let keys = match (key32(h)?, key32(d)?) {
            (Some(hmac), Some(data)) => Some(EpochKeys { hmac, data }),
            _ => None,
        };
        epochs.push(Epoch {
            id: EpochId(id),
            start,
            end,
            created_at,
            shredded_at,
            keys,
        });
    }
    let dedupe: Option<Vec<u8>> = conn
        .query_row("SELECT secret FROM vault_dedupe WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()?;
    let dedupe = match key32(dedupe)? {
        Some(d) => d,
        // A store older than the idempotency secret never had one.
        None => Secret::generate(),
    };
    Ok(crate::vault::LegacyKeys { epochs, dedupe })
}

impl SealedAggregates for SqliteStore {
    fn exact_aggregates(
        &self,
        metric: &str,
        grouping: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<AggRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT window_start, grp, contributors, n, total, bins FROM aggregates
             WHERE metric = ?1 AND grouping = ?2 AND window_start >= ?3 AND window_start < ?4 ORDER BY window_start, grp",
        )?;
        let rows = st.query_map(params![metric, grouping, from, to], |r| {
            let bins: String = r.get(5)?;
            Ok(AggRow {
                metric: metric.to_owned(),
                grouping: grouping.to_owned(),
                window_start: r.get(0)?,
                group: r.get(1)?,
                contributors: r.get(2)?,
                count: r.get(3)?,
                sum: r.get(4)?,
                bins: serde_json::from_str(&bins).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn first_window(&self, metric: &str) -> Result<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT MIN(window_start) FROM aggregates WHERE metric = ?1",
            [metric],
            |r| r.get(0),
        )?)
    }
}

impl Store for SqliteStore {
    fn dedupe_secret(&self) -> Result<Secret> {
        self.vault.dedupe_secret()
    }

    fn epochs(&self) -> Result<Vec<Epoch>> {
        self.vault.epochs()
    }

    fn vault_location(&self) -> String {
        self.vault.location()
    }

    fn staging_events(&self, collection: &str, keys: &KeyRing) -> Result<Vec<StagedRow>> {
        let mut st = self.conn.prepare("SELECT id, epoch, day, nonce, ciphertext FROM staging_segments WHERE collection = ?1 ORDER BY id")?;
        let rows = st.query_map([collection], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, Vec<u8>>(4)?,
            ))
        })?;
        let data_keys: HashMap<u32, &Secret> = keys
            .epochs()
            .filter_map(|e| Some((e.id.0, &e.keys.as_ref()?.data)))
            .collect();
        let mut out = Vec::new();
        for row in rows {
            let (segment, epoch, day, nonce, ct) = row?;
            let Some(k) = data_keys.get(&epoch) else {
                continue; // shredded: unreadable by design
            };
            let plain = crypto::open(k, &segment_aad(collection, epoch, day), &nonce, &ct)
                .ok_or_else(|| {
                    StoreError::Corrupt("a staging segment failed authentication".into())
                })?;
            let events = staging::decode_segment(&plain, day)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.extend(events.into_iter().map(|e| StagedRow {
                segment,
                epoch: EpochId(epoch),
                time: e.time,
                attrs: e.attrs,
            }));
        }
        Ok(out)
    }

    fn staging_summary(&self) -> Result<Vec<(String, u32, i64, i64)>> {
        let mut st = self.conn.prepare(
            "SELECT collection, epoch, SUM(events), MIN(day) FROM staging_segments GROUP BY collection, epoch ORDER BY collection, epoch",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get::<_, i64>(3)? * 86_400,
            ))
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn oldest_rows(&self) -> Result<(Option<i64>, Option<i64>)> {
        let agg = self
            .conn
            .query_row("SELECT MIN(window_start) FROM aggregates", [], |r| r.get(0))?;
        let q = self
            .conn
            .query_row("SELECT MIN(received_at) FROM quarantine", [], |r| r.get(0))?;
        Ok((agg, q))
    }

    fn opt_outs(&self) -> Result<Vec<[u8; 16]>> {
        let mut st = self.conn.prepare("SELECT digest FROM opt_outs")?;
        let rows = st.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r?.try_into().map_err(|_| {
                StoreError::Corrupt("an opt-out digest has the wrong length".into())
            })?);
        }
        Ok(out)
    }

    fn add_opt_out(&mut self, digest: [u8; 16], actor: &str, now: i64) -> Result<bool> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let new = tx.execute(
            "INSERT OR IGNORE INTO opt_outs (digest, created_at) VALUES (?1, ?2)",
            params![&digest[..], now],
        )? == 1;
        let total: i64 = tx.query_row("SELECT COUNT(*) FROM opt_outs", [], |r| r.get(0))?;
        let detail = serde_json::json!({"new": new, "opted_out": total});
        let e = append_audit(&tx, actor, "subject_opt_out", &detail, now)?;
        tx.commit()?;
        self.write_head(&e)?;
        Ok(new)
    }

    fn contributor_records(&self, keys: &KeyRing) -> Result<Vec<ContribRecord>> {
        subject::contributor_records(self, keys)
    }

    fn erase(
        &mut self,
        keys: &KeyRing,
        staged: &dyn Fn(&str, &StagedRow) -> bool,
        contrib: &dyn Fn(&str, i64, &veil_pipeline::ContributorId) -> bool,
        actor: &str,
        detail: &serde_json::Value,
        now: i64,
    ) -> Result<(usize, usize)> {
        subject::erase(
            self,
            keys,
            staged,
            contrib,
            actor,
            "subject_erase",
            detail,
            now,
        )
    }

    fn audit_entries(&self, actions: &[&str]) -> Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        let mut st = self.conn.prepare_cached(
            "SELECT seq, at, actor, action, detail, prev, hash FROM audit WHERE action = ?1 ORDER BY seq",
        )?;
        for a in actions {
            let rows = st.query_map([a], audit_row)?;
            for r in rows {
                out.push(r?);
            }
        }
        out.sort_by_key(|e| e.seq);
        Ok(out)
    }

    fn rotate_keys(&mut self, now: i64, actor: &str) -> Result<EpochId> {
        // The vault first: a crash before the audit entry leaves a new epoch that was not
        // logged, never a logged epoch without keys.
        let (ended, id) = self.vault.rotate(now)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let e = append_audit(
            &tx,
            actor,
            "key_rotate",
            &serde_json::json!({"ended_epoch": ended.0, "new_epoch": id.0}),
            now,
        )?;
        tx.commit()?;
        self.write_head(&e)?;
        Ok(id)
    }

    fn ingest(
        &mut self,
        policy: &Policy,
        keys: &KeyRing,
        batches: &[IngestBatch<'_>],
    ) -> Result<Vec<IngestOutcome>> {
        let now = batches.iter().map(|b| b.received_at).max().unwrap_or(0);
        let metric_names: Vec<&str> = policy.metrics().map(|(_, m)| m.name.as_str()).collect();
        let data_keys: HashMap<u32, &Secret> = keys
            .epochs()
            .filter_map(|e| Some((e.id.0, &e.keys.as_ref()?.data)))
            .collect();
        let mut outs = vec![IngestOutcome::default(); batches.len()];
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The door's `late` rule again, under the write lock a seal also takes: an event
        // whose window was sealed since the door looked (a concurrent `veil seal`) is
        // rejected as `late` — not staged, not counted, its id not claimed — and reported
        // by position, because sealed numbers never change and an accepted event is never
        // silently left out of them.
        let late_before = veil_pipeline::late_before(policy, &sealed_before_in(&tx, policy)?);
        let is_late = |a: &veil_pipeline::AcceptedRef<'_>| {
            a.time < late_before.get(a.collection).copied().unwrap_or(i64::MIN)
        };
        // Deduplicate on (source, id): within the transaction and against every committed one.
        let ids = batches.iter().flat_map(|b| {
            b.accepted
                .iter()
                .map(|a| a.dedupe.filter(|_| !is_late(&a)).map(|k| (k, a.time)))
        });
        let (duplicate, claimed) = self.seen.claim(&tx, ids, now)?;
        let written = (|| -> Result<AuditEntry> {
            let events: usize = batches.iter().map(|b| b.accepted.len()).sum();
            // Every event as (batch index, event) with its duplicate flag, and the fresh ones.
            let all = || {
                batches
                    .iter()
                    .enumerate()
                    .flat_map(|(bi, b)| b.accepted.iter().map(move |a| (bi, a)))
                    .zip(duplicate.iter().copied())
            };
            let accepted = || all().filter_map(|((bi, a), dup)| (!dup && !is_late(&a)).then_some((bi, a)));
            // Pass 1: outcomes, segment sizes, and in-batch aggregation of contributions.
            let mut seg_index: rustc_hash::FxHashMap<(usize, u32, i64), usize> =
                Default::default();
            let mut seg_sizes: Vec<((usize, u32, i64), usize, i64)> = Vec::new();
            let mut seg_of: Vec<u32> = Vec::with_capacity(events);
            let mut group_ids: rustc_hash::FxHashMap<&str, u32> = Default::default();
            let mut groups: Vec<&str> = Vec::new();
            let mut run_ids: rustc_hash::FxHashMap<(u32, i64), u32> = Default::default();
            let mut runs: Vec<((u32, i64), crate::contrib::RunWriter)> = Vec::new();
            let cells = &mut self.cells;
            cells.clear();
            for (bi, a) in accepted() {
                let out = &mut outs[bi];
                out.accepted += 1;
                out.clamped += a.clamped as usize;
                out.redacted += a.redacted as usize;
                out.dropped_attributes += a.dropped as usize;
                let key = (a.collection, a.epoch.0, staging::day_of(a.time));
                let si = *seg_index.entry(key).or_insert_with(|| {
                    seg_sizes.push((key, 0, 0));
                    seg_sizes.len() - 1
                });
                seg_sizes[si].1 += a.payload.len();
                seg_sizes[si].2 += 1;
                seg_of.push(si as u32);
                for c in a.contributions {
                    let group = *group_ids.entry(c.group.as_str()).or_insert_with(|| {
                        groups.push(c.group.as_str());
                        groups.len() as u32 - 1
                    });
                    let run = *run_ids.entry((c.metric, c.window_start)).or_insert_with(|| {
                        runs.push(((c.metric, c.window_start), Default::default()));
                        runs.len() as u32 - 1
                    });
                    let cell = Cell {
                        run,
                        bin: c.bin,
                        group,
                        contributor: *c.contributor.bytes(),
                    };
                    cells.add(cell, c.value);
                }
            }
            for ((bi, a), dup) in all() {
                if is_late(&a) {
                    continue; // a rejection, counted with the others below
                }
                outs[bi].duplicates += usize::from(dup);
                outs[bi].without_id += usize::from(!a.had_id);
            }
            // Pass 2: every segment (header, rows, then room for its tag) gets its final
            // place in the arena, is filled row by row, and is encrypted where it lies.
            let headers: Vec<Vec<u8>> = seg_sizes
                .iter()
                .map(|&((ci, _, _), _, _)| staging::segment_header(&policy.collections()[ci]))
                .collect();
            let mut spans = Vec::with_capacity(seg_sizes.len()); // (start, plaintext length)
            let mut end = 0;
            for (&(_, bytes, _), h) in seg_sizes.iter().zip(&headers) {
                spans.push((end, h.len() + bytes));
                end += h.len() + bytes + 16;
            }
            let arena = &mut self.arena;
            arena.clear();
            arena.resize(end, 0);
            let mut cursor: Vec<usize> = spans
                .iter()
                .zip(&headers)
                .map(|(&(start, _), h)| {
                    arena[start..start + h.len()].copy_from_slice(h);
                    start + h.len()
                })
                .collect();
            for ((_, a), &si) in accepted().zip(&seg_of) {
                let at = &mut cursor[si as usize];
                arena[*at..*at + a.payload.len()].copy_from_slice(a.payload);
                *at += a.payload.len();
            }
            debug_assert!(cursor.iter().zip(&spans).all(|(c, (s, l))| *c == s + l));
            let mut seg_ins = tx.prepare_cached(
                "INSERT INTO staging_segments (collection, epoch, day, events, nonce, ciphertext, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (((ci, epoch, day), _, n), (start, len)) in seg_sizes.into_iter().zip(spans) {
                let coll = &policy.collections()[ci].name;
                let key = data_keys.get(&epoch).ok_or_else(|| {
                    StoreError::Corrupt(
                        "an accepted event belongs to an epoch without a data key".into(),
                    )
                })?;
                let (plain, tag) = arena[start..start + len + 16].split_at_mut(len);
                let nonce = crypto::seal_detached(key, &segment_aad(coll, epoch, day), plain, tag);
                let ct = &arena[start..start + len + 16];
                seg_ins.execute(params![coll, epoch, day, n, &nonce[..], ct, now])?;
            }
            if arena.capacity() > ARENA_KEPT {
                *arena = Vec::new();
            }
            // Per-contributor state is appended as one binary run per (metric, window) and
            // batch; sealing sums the runs. No per-row statements, no random upserts.
            cells.drain(|c, n, total| {
                let g = groups[c.group as usize];
                runs[c.run as usize].1.push(c.group, g, &c.contributor, c.bin, n, total);
            });
            let mut up = tx.prepare_cached("INSERT INTO staging_contrib (metric, window_start, rows, data) VALUES (?1, ?2, ?3, ?4)")?;
            for ((m, w), run) in runs {
                let rows = run.rows;
                let epoch = keys.epoch_at(w).filter(|e| e.keys.is_some()).map(|e| e.id.0);
                let key = epoch.and_then(|e| data_keys.get(&e)).ok_or_else(|| {
                    StoreError::Corrupt(
                        "a contribution belongs to a window whose epoch has no data key".into(),
                    )
                })?;
                let name = metric_names[m as usize];
                let sealed = crate::contrib::seal_run(
                    key,
                    epoch.expect("checked"),
                    name,
                    w,
                    &run.finish(),
                );
                up.execute(params![name, w, rows, sealed])?;
            }
            let mut q = tx.prepare_cached(
                "INSERT INTO quarantine (received_at, source, reason, message, collection, field_names, late_day) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (batch, out) in batches.iter().zip(outs.iter_mut()) {
                let mut late = Vec::new();
                for (at, a) in batch.accepted.iter().enumerate() {
                    if is_late(&a) {
                        out.late.push(at);
                        late.push(
                            Rejection::late(policy.collections().get(a.collection)).on_day(a.time),
                        );
                    }
                }
                for r in batch.rejected.iter().chain(&late) {
                    *out.rejected.entry(r.reason().code().to_owned()).or_default() += 1;
                    let names = serde_json::to_string(r.field_names()).expect("strings serialize");
                    q.execute(params![
                        batch.received_at,
                        batch.source,
                        r.reason().code(),
                        r.message(),
                        r.collection(),
                        names,
                        r.late_day()
                    ])?;
                }
            }
            // One audit entry per transaction, with counts per source.
            let mut per_source: BTreeMap<&str, IngestOutcome> = BTreeMap::new();
            for (batch, out) in batches.iter().zip(&outs) {
                per_source.entry(batch.source).or_default().add(out);
            }
            let summary = |src: &str, o: &IngestOutcome| {
                let mut s = serde_json::json!({
                    "source": src, "accepted": o.accepted, "duplicates": o.duplicates,
                    "rejected": o.rejected, "clamped": o.clamped, "redacted": o.redacted,
                    "without_id": o.without_id,
                });
                if o.dropped_attributes > 0 {
                    s["dropped_attributes"] = o.dropped_attributes.into();
                }
                s
            };
            let (actor, detail) = match per_source.len() {
                1 => {
                    let (src, o) = per_source.iter().next().expect("one");
                    (*src, summary(src, o))
                }
                _ => (
                    "gateway",
                    serde_json::json!({
                        "requests": batches.len(),
                        "sources": per_source.iter().map(|(s, o)| summary(s, o)).collect::<Vec<_>>(),
                    }),
                ),
            };
            let e = append_audit(&tx, actor, "ingest", &detail, now)?;
            Ok(e)
        })()
        .and_then(|e| {
            tx.commit()?;

            Ok(e)
        });
        let e = written?;
        self.seen.committed(claimed);
        self.write_head(&e)?;
        Ok(outs)
    }

    fn sealed_before(&self, policy: &Policy) -> Result<Vec<i64>> {
        sealed_before_in(&self.conn, policy)
    }

    fn seal(
        &mut self,
        policy: &Policy,
        keys: &KeyRing,
        now: i64,
        actor: &str,
    ) -> Result<SealOutcome> {
        let data_key = |e: u32| {
            keys.epochs()
                .find(|x| x.id.0 == e)
                .and_then(|x| x.keys.as_ref().map(|k| k.data.clone()))
        };
        let mut out = SealOutcome::default();
        let mut rng = rand::rngs::StdRng::from_entropy();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (c, m) in policy.metrics() {
            let boundary = window::start(m.window, now - policy.defaults().seal_grace);
            let windows: Vec<i64> = {
                let mut st = tx.prepare_cached("SELECT DISTINCT window_start FROM staging_contrib WHERE metric = ?1 AND window_start < ?2 ORDER BY 1")?;
                let v = st
                    .query_map(params![m.name, boundary], |r| r.get(0))?
                    .collect::<std::result::Result<_, _>>()?;
                v
            };
            let dims: Vec<&str> = m.by.iter().map(|&i| c.fields[i].name()).collect();
            let metric_keys = keys.metric_keys(&m.name, i64::MIN);
            let nbins = if m.kind == MetricKind::Histogram {
                m.bins.len() - 1
            } else {
                0
            };
            let bounds = Bounds {
                l0: m.max_groups_per_contributor,
                linf: m.max_contributions_per_group,
                nbins,
            };
            for w in windows {
                let rows: Vec<ContribRow> = {
                    let mut st = tx.prepare_cached(
                        "SELECT data FROM staging_contrib WHERE metric = ?1 AND window_start = ?2",
                    )?;
                    let mut sum: HashMap<(String, [u8; 16], i32), (i64, i64)> = HashMap::new();
                    let mut q = st.query(params![m.name, w])?;
                    while let Some(r) = q.next()? {
                        let stored: Vec<u8> = r.get(0)?;
                        let Some((data, legacy)) =
                            crate::contrib::open_run(&data_key, &m.name, w, &stored)?
                        else {
                            continue; // its epoch is shredded: nobody can count it any more
                        };
                        crate::contrib::decode(&data, &mut |g, c, bin, n, total| {
                            // A run from before contributor ids holds the window pseudonym:
                            // map it to the id the door now derives from it, so one person
                            // stays one contributor across the upgrade.
                            let c = if legacy {
                                match keys.contributor_of_pseudonym(&metric_keys, w, c) {
                                    Some(id) => *id.bytes(),
                                    None => return,
                                }
                            } else {
                                c
                            };
                            let e = sum.entry((g.to_owned(), c, bin)).or_insert((0, 0));
                            e.0 += n;
                            e.1 = e.1.saturating_add(total);
                        })?;
                    }
                    sum.into_iter()
                        .map(|((group, contributor, bin), (n, total))| ContribRow {
                            group,
                            contributor,
                            bin,
                            n,
                            total,
                        })
                        .collect()
                };
                for keep in seal::groupings(dims.len()) {
                    let grouping = keep.iter().map(|&i| dims[i]).collect::<Vec<_>>().join(",");
                    for g in seal::aggregate(&rows, &keep, bounds, &mut rng) {
                        tx.execute(
                            "INSERT INTO aggregates (metric, grouping, window_start, grp, contributors, n, total, bins, sealed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                            params![m.name, grouping, w, g.group, g.contributors, g.count, g.sum, serde_json::to_string(&g.bins).expect("ints serialize"), now],
                        )?;
                    }
                }
                tx.execute(
                    "DELETE FROM staging_contrib WHERE metric = ?1 AND window_start = ?2",
                    params![m.name, w],
                )?;
                out.windows
                    .push((m.name.clone(), window::label(m.window, w)));
            }
            tx.execute(
                "INSERT INTO seal_state (metric, sealed_before) VALUES (?1, ?2) ON CONFLICT (metric) DO UPDATE SET sealed_before = MAX(sealed_before, excluded.sealed_before)",
                params![m.name, boundary],
            )?;
        }
        // Windows only: how many groups a window holds (singletons of free-form values
        // included) is a count no release would show.
        let detail = serde_json::json!({"windows": out.windows.len(),
            "sealed": out.windows.iter().map(|(m, w)| format!("{m}@{w}")).collect::<Vec<_>>()});
        let e = append_audit(&tx, actor, "seal", &detail, now)?;
        tx.commit()?;
        self.write_head(&e)?;
        Ok(out)
    }

    fn purge(
        &mut self,
        policy: &Policy,
        now: i64,
        actor: &str,
        mode: PurgeMode,
    ) -> Result<PurgeReport> {
        purge::run(self, policy, now, actor, mode)
    }

    fn audit(
        &mut self,
        actor: &str,
        action: &str,
        detail: &serde_json::Value,
        now: i64,
    ) -> Result<AuditEntry> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let e = append_audit(&tx, actor, action, detail, now)?;
        tx.commit()?;
        self.write_head(&e)?;
        Ok(e)
    }

    fn audit_log(&self, since: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        let mut st = self.conn.prepare("SELECT seq, at, actor, action, detail, prev, hash FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = st.query_map(params![since, limit], audit_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn last_audit(&self, action: &str) -> Result<Option<AuditEntry>> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq, at, actor, action, detail, prev, hash FROM audit WHERE action = ?1 ORDER BY seq DESC LIMIT 1",
                [action],
                audit_row,
            )
            .optional()?)
    }

    fn audit_verify(&self, anchors: &[audit::Anchor]) -> Result<Verification> {
        // Read in storage order (rowid), not by seq, so reordered rows are visible as such.
        let mut st = self.conn.prepare(
            "SELECT seq, at, actor, action, detail, prev, hash FROM audit ORDER BY rowid",
        )?;
        let rows: Vec<AuditEntry> = st
            .query_map([], audit_row)?
            .collect::<std::result::Result<_, _>>()?;
        let mut v = audit::verify(&rows, self.read_head());
        if !v.ok {
            return Ok(v);
        }
        let releases = self.releases()?;
        let bound = audit::Bound {
            releases: &releases,
            ledger: ledger_rows(&self.conn)?,
            windows: window_rows(&self.conn)?,
        };
        let checked =
            audit::verify_bound(&rows, &bound).and_then(|()| audit::verify_anchors(&rows, anchors));
        if let Err((seq, problem)) = checked {
            v.ok = false;
            v.first_bad = Some(seq);
            v.problem = Some(problem);
            v.head = None;
        }
        Ok(v)
    }

    fn audit_head(&self) -> Result<Option<AuditEntry>> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq, at, actor, action, detail, prev, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                audit_row,
            )
            .optional()?)
    }

    fn collector_cursor(&self, key: &str) -> Result<Option<String>> {
        let stored: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [format!("cursor:{key}")],
                |r| r.get(0),
            )
            .optional()?;
        // `epoch:nonce:ciphertext`; a cursor whose epoch was shredded is simply gone.
        let Some(stored) = stored else {
            return Ok(None);
        };
        let mut parts = stored.splitn(3, ':');
        let (Some(epoch), Some(nonce), Some(ct)) = (parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let (Ok(epoch), Ok(nonce), Ok(ct)) =
            (epoch.parse::<u32>(), hex::decode(nonce), hex::decode(ct))
        else {
            return Ok(None);
        };
        let epochs = self.epochs()?;
        let Some(keys) = epochs
            .iter()
            .find(|e| e.id.0 == epoch)
            .and_then(|e| e.keys.as_ref())
        else {
            return Ok(None);
        };
        Ok(crate::crypto::open(&keys.data, key.as_bytes(), &nonce, &ct)
            .and_then(|p| String::from_utf8(p).ok()))
    }

    fn set_collector_cursor(&mut self, key: &str, value: &str) -> Result<()> {
        // A cursor names a commit, which the repository links to its author: it is kept
        // encrypted under the newest epoch's data key, so it is shredded with the epoch.
        let epochs = self.epochs()?;
        let Some((id, keys)) = epochs
            .iter()
            .rev()
            .find_map(|e| e.keys.as_ref().map(|k| (e.id.0, k)))
        else {
            return Err(StoreError::Corrupt(
                "the vault has no live epoch key".into(),
            ));
        };
        let (nonce, ct) = crate::crypto::seal(&keys.data, key.as_bytes(), value.as_bytes());
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![
                format!("cursor:{key}"),
                format!("{id}:{}:{}", hex::encode(nonce), hex::encode(ct))
            ],
        )?;
        Ok(())
    }

    fn note_policy(&mut self, policy: &Policy, actor: &str, now: i64) -> Result<bool> {
        let last: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'policy_hash'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        // What was loaded: the policy and, when it names one, its team map (rosters decide
        // what is shown, so a changed map is a policy change too).
        // `#r1`: entries record the retentions (what `audit verify` checks purges
        // against); a store whose last entry predates that records the policy again.
        let loaded = match policy.team_map() {
            Some(m) => format!("{}+{}#r1", policy.hash(), m.hash()),
            None => format!("{}#r1", policy.hash()),
        };
        if last.as_deref() == Some(loaded.as_str()) {
            return Ok(false);
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("INSERT INTO meta (key, value) VALUES ('policy_hash', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [&loaded])?;
        let previous = last
            .as_deref()
            .map(|l| l.split(['+', '#']).next().unwrap_or(l));
        let retention: BTreeMap<&str, i64> = policy
            .collections()
            .iter()
            .map(|c| (c.name.as_str(), c.aggregate_retention))
            .collect();
        let mut detail = serde_json::json!({"policy_sha256": policy.hash(), "previous_sha256": previous, "collections": policy.collections().len(),
            "aggregate_retention": retention, "default_aggregate_retention": policy.defaults().aggregate_retention});
        if let Some(m) = policy.team_map() {
            detail["team_map_sha256"] = serde_json::json!(m.hash());
            detail["teams"] = serde_json::json!(m.teams().len());
        }
        let e = append_audit(&tx, actor, "policy_load", &detail, now)?;
        tx.commit()?;
        self.write_head(&e)?;
        Ok(true)
    }

    fn quarantine_counts(&self) -> Result<BTreeMap<String, i64>> {
        let mut st = self
            .conn
            .prepare("SELECT reason, COUNT(*) FROM quarantine GROUP BY reason")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn quarantine_by_day(&self, since: i64) -> Result<Vec<(i64, String, i64)>> {
        let mut st = self.conn.prepare(
            "SELECT received_at - (received_at % 86400) AS day, reason, COUNT(*) FROM quarantine \
             WHERE received_at >= ?1 GROUP BY day, reason ORDER BY day, reason",
        )?;
        let rows = st.query_map([since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn late_by_day(&self, collection: &str, since: i64) -> Result<Vec<(i64, i64)>> {
        let mut st = self.conn.prepare(
            "SELECT late_day, COUNT(*) FROM quarantine WHERE reason = 'late' AND collection = ?1 \
             AND late_day >= ?2 GROUP BY late_day ORDER BY late_day",
        )?;
        let rows = st.query_map(params![collection, since], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn release_by_id(&self, release_id: &str) -> Result<Option<ReleaseRecord>> {
        let Some(r) = self
            .conn
            .query_row(
                "SELECT release_id, query_key, principal, collection, epsilon, created_at, document FROM releases WHERE release_id = ?1",
                [release_id],
                release_row,
            )
            .optional()?
        else {
            return Ok(None);
        };
        // Served only as the chain recorded it: an edited or replaced row is refused, not
        // shown. The index names the entry; the entry itself (its hash) is the proof.
        let seq: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM release_index WHERE release_id = ?1",
                [&r.release_id],
                |x| x.get(0),
            )
            .optional()?;
        let entry = match seq {
            Some(seq) => self
                .conn
                .query_row(
                    "SELECT seq, at, actor, action, detail, prev, hash FROM audit WHERE seq = ?1",
                    [seq],
                    audit_row,
                )
                .optional()?,
            None => None,
        };
        let entry = match entry {
            Some(e) => Some(e),
            // Releases recorded by a baseline (or an index row gone): find the entry.
            None => release_entries(&self.conn)?
                .into_iter()
                .find(|e| audit::check_release(e, &r).is_ok()),
        };
        match entry.map(|e| audit::check_release(&e, &r)) {
            Some(Ok(())) => Ok(Some(r)),
            _ => Err(StoreError::Corrupt(format!(
                "stored release {} does not match what its audit entry recorded; run `veil audit verify`",
                r.release_id
            ))),
        }
    }

    fn released_windows(
        &self,
        metric: &str,
        grouping: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, String)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT window_start, release_id FROM release_windows
             WHERE metric = ?1 AND grouping = ?2 AND window_start >= ?3 AND window_start < ?4 ORDER BY window_start",
        )?;
        let rows = st.query_map(params![metric, grouping, from, to], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn spend_and_store(
        &mut self,
        rel: &ReleaseRecord,
        windows: &ReleasedWindows,
        charges: &[PeriodCharge],
        budget_micro: i64,
        audit_detail: &serde_json::Value,
        render: &dyn Fn(f64) -> String,
    ) -> Result<Spend> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for &w in &windows.starts {
            let taken: Option<String> = tx
                .query_row(
                    "SELECT release_id FROM release_windows WHERE metric = ?1 AND grouping = ?2 AND window_start = ?3",
                    params![windows.metric, windows.grouping, w],
                    |r| r.get(0),
                )
                .optional()?;
            if taken.is_some() {
                return Err(StoreError::Conflict);
            }
        }
        let total: i64 = charges.iter().map(|c| c.epsilon_micro).sum();
        if charges.is_empty()
            || charges
                .iter()
                .any(|c| c.epsilon_micro <= 0 || c.period_end <= c.period_start)
            || total != micro(rel.epsilon)
        {
            return Err(StoreError::Corrupt(
                "a release must carry positive charges that add up to its epsilon".into(),
            ));
        }
        let mut left_last = 0i64;
        for c in charges {
            let spent = proven_spent(&tx, &rel.collection, c.period_start, c.period_end)?;
            if spent + c.epsilon_micro > budget_micro {
                let left = (budget_micro - spent).max(0) as f64 / 1e6;
                let mut d = audit_detail.clone();
                if let Some(d) = d.as_object_mut() {
                    d.remove("outcome");
                }
                d["refused"] = serde_json::json!("budget_exhausted");
                d["period_start"] = serde_json::json!(rfc3339(c.period_start));
                d["budget_left"] = serde_json::json!(left);
                let e = append_audit(&tx, &rel.principal, "release_refused", &d, rel.created_at)?;
                tx.commit()?;
                self.write_head(&e)?;
                return Ok(Spend::Refused {
                    left,
                    period_start: c.period_start,
                });
            }
            left_last = budget_micro - spent - c.epsilon_micro;
        }
        for c in charges {
            tx.execute(
                "INSERT INTO budget_ledger (principal, collection, period_start, period_end, spent_micro) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (principal, collection, period_start, period_end) DO UPDATE SET spent_micro = spent_micro + excluded.spent_micro",
                params![rel.principal, rel.collection, c.period_start, c.period_end, c.epsilon_micro],
            )?;
        }
        let left = left_last as f64 / 1e6;
        let document = render(left);
        tx.execute(
            "INSERT INTO releases (release_id, query_key, principal, collection, epsilon, created_at, document) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![rel.release_id, rel.query_key, rel.principal, rel.collection, rel.epsilon, rel.created_at, document],
        )?;
        for &w in &windows.starts {
            tx.execute(
                "INSERT INTO release_windows (metric, grouping, window_start, release_id) VALUES (?1, ?2, ?3, ?4)",
                params![windows.metric, windows.grouping, w, rel.release_id],
            )?;
        }
        // The entry binds the document, the charges and the windows: verify checks all
        // three against it, and budgets are what these entries add up to.
        let mut detail = audit_detail.clone();
        detail["release_id"] = serde_json::json!(rel.release_id);
        detail["query_key"] = serde_json::json!(rel.query_key);
        detail["document_sha256"] = serde_json::json!(audit::document_hash(&document));
        detail["charges"] = serde_json::json!(charges
            .iter()
            .map(|c| audit::Charge {
                principal: rel.principal.clone(),
                collection: rel.collection.clone(),
                period_start: c.period_start,
                period_end: Some(c.period_end),
                epsilon_micro: c.epsilon_micro,
            })
            .collect::<Vec<_>>());
        detail["released_windows"] = serde_json::json!(audit::WindowBinding {
            metric: windows.metric.clone(),
            grouping: windows.grouping.clone(),
            starts: windows.starts.clone(),
        });
        let e = append_audit(&tx, &rel.principal, "release", &detail, rel.created_at)?;
        tx.execute(
            "INSERT INTO release_index (release_id, seq) VALUES (?1, ?2)",
            params![rel.release_id, e.seq],
        )?;
        tx.commit()?;
        // The charge and the document are committed: the answer must be given. A head that
        // could not be written stays one entry behind (allowed: a head is never ahead of
        // the chain), and the next append writes it again.
        let _ = self.write_head(&e);
        Ok(Spend::Spent { left })
    }

    fn spent(&self, collection: &str, from: i64, to: i64) -> Result<f64> {
        Ok(proven_spent(&self.conn, collection, from, to)? as f64 / 1e6)
    }

    fn spent_by_principal(&self) -> Result<BTreeMap<(String, String), f64>> {
        let mut out: BTreeMap<(String, String), f64> = BTreeMap::new();
        for ((p, c, _, _), micro) in audit::chain_charges(&release_entries(&self.conn)?) {
            *out.entry((p, c)).or_default() += micro as f64 / 1e6;
        }
        Ok(out)
    }

    fn releases(&self) -> Result<Vec<ReleaseRecord>> {
        let mut st = self.conn.prepare("SELECT release_id, query_key, principal, collection, epsilon, created_at, document FROM releases ORDER BY created_at, release_id")?;
        let rows = st.query_map([], release_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

/// Every `release` and `binding_baseline` entry of the chain, in order.
fn release_entries(conn: &Connection) -> Result<Vec<AuditEntry>> {
    let mut st = conn.prepare_cached(
        "SELECT seq, at, actor, action, detail, prev, hash FROM audit WHERE action IN ('release', 'binding_baseline') ORDER BY seq",
    )?;
    let rows = st.query_map([], audit_row)?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

/// The budget ledger as stored.
fn ledger_rows(conn: &Connection) -> Result<BTreeMap<audit::ChargeKey, i64>> {
    let mut st = conn.prepare(
        "SELECT principal, collection, period_start, period_end, spent_micro FROM budget_ledger",
    )?;
    let rows = st.query_map([], |r| {
        Ok(((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?), r.get(4)?))
    })?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

/// ε in millionths spent on a collection's data of `[from, to)`, over every principal:
/// every charge whose data time overlaps it, whatever period length it was charged under
/// (so shortening or lengthening `budget.period` gives nothing back), as the audit chain
/// proves it, or the ledger when it says more. A deleted or lowered ledger row therefore
/// gives no budget back, and a ledger that disagrees costs budget, never availability
/// (`veil audit verify` reports the disagreement).
fn proven_spent(conn: &Connection, collection: &str, from: i64, to: i64) -> Result<i64> {
    let proven: i64 = audit::chain_spans(&release_entries(conn)?)
        .iter()
        .filter(|s| s.collection == collection && s.overlaps(from, to))
        .map(|s| s.epsilon_micro)
        .sum();
    // A ledger row of unknown end (end 0) counts in the period it names.
    let ledger: i64 = conn.query_row(
        "SELECT COALESCE(SUM(spent_micro), 0) FROM budget_ledger WHERE collection = ?1
           AND period_start < ?3 AND (CASE period_end WHEN 0 THEN period_start + 1 ELSE period_end END) > ?2",
        params![collection, from, to],
        |r| r.get(0),
    )?;
    Ok(proven.max(ledger))
}

/// The release-window index as stored: (metric, grouping, window start) → release id.
fn window_rows(conn: &Connection) -> Result<BTreeMap<(String, String, i64), String>> {
    let mut st =
        conn.prepare("SELECT metric, grouping, window_start, release_id FROM release_windows")?;
    let rows = st.query_map([], |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?)))?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

fn audit_row(r: &rusqlite::Row) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        detail: r.get(4)?,
        prev: r.get(5)?,
        hash: r.get(6)?,
    })
}

fn release_row(r: &rusqlite::Row) -> rusqlite::Result<ReleaseRecord> {
    Ok(ReleaseRecord {
        release_id: r.get(0)?,
        query_key: r.get(1)?,
        principal: r.get(2)?,
        collection: r.get(3)?,
        epsilon: r.get(4)?,
        created_at: r.get(5)?,
        document: r.get(6)?,
    })
}
