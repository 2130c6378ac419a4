//! The vault zone: epoch keys and the idempotency secret, kept apart from the data they
//! protect (spec §2 Zones). A copy of the data directory holds no key, so an epoch whose
//! keys the vault destroyed stays unreadable when that copy is restored.
//!
//! [`Vault`] is the boundary (an external key store can implement it); [`FileVault`] is
//! the default: one JSON file, `keys.json`, in its own directory outside the data
//! directory, written whole to a temporary file, synced and renamed over the old one
//! under an exclusive lock, so a reader sees the old or the new vault and never half of
//! one, and two processes rotating at once cannot lose an epoch.

use crate::{Result, StoreError};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use veil_pipeline::{Epoch, EpochId, EpochKeys, Secret};

/// End of the newest epoch: it is open until the next rotation.
pub const OPEN_END: i64 = i64::MAX;

/// Where epoch keys live. Every method is atomic: a crash leaves the vault as it was or
/// as the call left it.
pub trait Vault: Send {
    /// Where the vault is, for `veil status` (a path or a key store's name; no secret).
    fn location(&self) -> String;
    /// A random id fixed when the vault was made; the data directory records it, so a
    /// store is never opened against another installation's vault.
    fn id(&self) -> Result<String>;
    /// Every epoch, oldest first; shredded ones have no keys.
    fn epochs(&self) -> Result<Vec<Epoch>>;
    /// The idempotency secret (one per installation).
    fn dedupe_secret(&self) -> Result<Secret>;
    /// Ends the open epoch at `now` and starts one with fresh keys: `(ended, started)`.
    fn rotate(&mut self, now: i64) -> Result<(EpochId, EpochId)>;
    /// Destroys the keys of these epochs (never the open one); returns those it destroyed
    /// now (an epoch already shredded is not returned again).
    fn shred(&mut self, epochs: &[EpochId], now: i64) -> Result<Vec<EpochId>>;
}

/// The file format of `keys.json`. Keys are hex; a shredded epoch keeps its range and
/// dates and loses both keys.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultFile {
    format: u32,
    id: String,
    /// The data directory this vault serves (its `meta.store_id`), once bound: a second
    /// installation pointed at this vault is refused instead of sharing its keys.
    #[serde(default)]
    store: Option<String>,
    created_at: i64,
    dedupe_secret: String,
    epochs: Vec<EpochEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EpochEntry {
    id: u32,
    start: i64,
    end: i64,
    created_at: i64,
    hmac_key: Option<String>,
    data_key: Option<String>,
    shredded_at: Option<i64>,
}

const FORMAT: u32 = 1;
const FILE: &str = "keys.json";
const LOCK: &str = "keys.lock";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn secret(hex_key: &str) -> Result<Secret> {
    let bytes: [u8; 32] = hex::decode(hex_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("a vault key is not 32 hex-encoded bytes".into()))?;
    Ok(Secret::from_bytes(bytes))
}

fn fresh_epoch(id: u32, start: i64, now: i64) -> EpochEntry {
    EpochEntry {
        id,
        start,
        end: OPEN_END,
        created_at: now,
        hmac_key: Some(hex::encode(Secret::generate().expose())),
        data_key: Some(hex::encode(Secret::generate().expose())),
        shredded_at: None,
    }
}

/// The default vault: `keys.json` in a directory of its own.
#[derive(Debug, Clone)]
pub struct FileVault {
    dir: PathBuf,
}

/// The keys a store kept in its database before the vault moved out of it: every epoch
/// and the idempotency secret (see [`FileVault::adopt`]).
pub struct LegacyKeys {
    pub epochs: Vec<Epoch>,
    pub dedupe: Secret,
}

impl FileVault {
    /// The vault file inside a vault directory.
    pub fn file_path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// Whether a vault exists at `dir`.
    pub fn exists(dir: &Path) -> bool {
        Self::file_path(dir).exists()
    }

    /// Opens an existing vault; a missing one is [`StoreError::VaultMissing`].
    pub fn open(dir: &Path) -> Result<Self> {
        if !Self::exists(dir) {
            return Err(StoreError::VaultMissing(dir.display().to_string()));
        }
        let v = FileVault {
            dir: dir.to_path_buf(),
        };
        v.read()?;
        Ok(v)
    }

    /// Makes a new vault with its first epoch (covering all time before the next
    /// rotation) and a fresh idempotency secret; refuses to overwrite one.
    pub fn create(dir: &Path, now: i64) -> Result<Self> {
        Self::write_new(
            dir,
            VaultFile {
                format: FORMAT,
                id: hex::encode(Secret::generate().expose()),
                store: None,
                created_at: now,
                dedupe_secret: hex::encode(Secret::generate().expose()),
                epochs: vec![fresh_epoch(1, i64::MIN, now)],
            },
        )
    }

    /// Makes a vault holding keys that a store made before the vault moved out of the
    /// database kept in it, so its staged data stays readable after the move.
    pub fn adopt(dir: &Path, legacy: &LegacyKeys, now: i64) -> Result<Self> {
        let epochs = legacy
            .epochs
            .iter()
            .map(|e| EpochEntry {
                id: e.id.0,
                start: e.start,
                end: e.end,
                created_at: e.created_at,
                hmac_key: e.keys.as_ref().map(|k| hex::encode(k.hmac.expose())),
                data_key: e.keys.as_ref().map(|k| hex::encode(k.data.expose())),
                shredded_at: e.keys.is_none().then_some(e.shredded_at.unwrap_or(now)),
            })
            .collect();
        Self::write_new(
            dir,
            VaultFile {
                format: FORMAT,
                id: hex::encode(Secret::generate().expose()),
                store: None,
                created_at: now,
                dedupe_secret: hex::encode(legacy.dedupe.expose()),
                epochs,
            },
        )
    }

    fn write_new(dir: &Path, file: VaultFile) -> Result<Self> {
        create_private_dir(dir)?;
        let v = FileVault {
            dir: dir.to_path_buf(),
        };
        let _lock = v.lock()?;
        if Self::exists(dir) {
            return Err(StoreError::Corrupt(format!(
                "a vault already exists at {}",
                dir.display()
            )));
        }
        v.write(&file)?;
        Ok(v)
    }

    fn lock(&self) -> Result<File> {
        let path = self.dir.join(LOCK);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        f.lock().map_err(io(&path))?;
        Ok(f)
    }

    fn read(&self) -> Result<VaultFile> {
        let path = Self::file_path(&self.dir);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let v: VaultFile = serde_json::from_str(&text).map_err(|e| {
            StoreError::Corrupt(format!(
                "the vault file {} is not readable ({} at line {}, column {})",
                path.display(),
                match e.classify() {
                    serde_json::error::Category::Io => "i/o error",
                    serde_json::error::Category::Syntax => "invalid JSON",
                    serde_json::error::Category::Data => "unexpected content",
                    serde_json::error::Category::Eof => "truncated",
                },
                e.line(),
                e.column()
            ))
        })?;
        if v.format != FORMAT {
            return Err(StoreError::Corrupt(format!(
                "the vault file {} has format {}; this version reads format {FORMAT}",
                path.display(),
                v.format
            )));
        }
        Ok(v)
    }

    /// Writes the whole file beside the old one, syncs it, renames it over the old one
    /// and syncs the directory: the old keys are gone from the file system's view once
    /// this returns, and a crash leaves one complete vault.
    fn write(&self, v: &VaultFile) -> Result<()> {
        let path = Self::file_path(&self.dir);
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let text = serde_json::to_vec_pretty(v).expect("the vault serializes");
        {
            let mut opts = OpenOptions::new();
            opts.create(true).truncate(true).write(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp).map_err(io(&tmp))?;
            f.write_all(&text).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
    }

    /// Reads, changes and writes the vault under its lock.
    fn update<T>(&mut self, f: impl FnOnce(&mut VaultFile) -> Result<T>) -> Result<T> {
        let _lock = self.lock()?;
        let mut v = self.read()?;
        let out = f(&mut v)?;
        self.write(&v)?;
        Ok(out)
    }
}

impl FileVault {
    /// Binds the vault to the data directory `store` (its random id), or checks that it
    /// is bound to it: [`StoreError::VaultMismatch`] when it serves another one.
    pub fn bind_store(&mut self, store: &str) -> Result<()> {
        let location = self.dir.display().to_string();
        if self.read()?.store.as_deref() == Some(store) {
            return Ok(()); // bound already: no write on every open
        }
        self.update(|v| match &v.store {
            Some(s) if s != store => Err(StoreError::VaultMismatch(location)),
            Some(_) => Ok(()),
            None => {
                v.store = Some(store.to_owned());
                Ok(())
            }
        })
    }

    /// Whether this vault holds exactly these keys (a store's legacy keys, before they
    /// are wiped from the database): every epoch with the same id, range and keys, and
    /// the same idempotency secret.
    pub fn holds(&self, legacy: &LegacyKeys) -> Result<bool> {
        let mine = self.epochs()?;
        let same_keys = |a: &Option<EpochKeys>, b: &Option<EpochKeys>| match (a, b) {
            (Some(a), Some(b)) => {
                a.hmac.expose() == b.hmac.expose() && a.data.expose() == b.data.expose()
            }
            (None, _) => true,
            (Some(_), None) => false,
        };
        let epochs_ok = legacy.epochs.iter().all(|l| {
            mine.iter()
                .any(|m| m.id == l.id && m.start == l.start && same_keys(&l.keys, &m.keys))
        });
        Ok(epochs_ok && self.dedupe_secret()?.expose() == legacy.dedupe.expose())
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(io(dir))
}

impl Vault for FileVault {
    fn location(&self) -> String {
        Self::file_path(&self.dir).display().to_string()
    }

    fn id(&self) -> Result<String> {
        Ok(self.read()?.id)
    }

    fn epochs(&self) -> Result<Vec<Epoch>> {
        let mut out = Vec::new();
        for e in self.read()?.epochs {
            let keys = match (&e.hmac_key, &e.data_key) {
                (Some(h), Some(d)) => Some(EpochKeys {
                    hmac: secret(h)?,
                    data: secret(d)?,
                }),
                _ => None,
            };
            out.push(Epoch {
                id: EpochId(e.id),
                start: e.start,
                end: e.end,
                created_at: e.created_at,
                shredded_at: e.shredded_at,
                keys,
            });
        }
        out.sort_by_key(|e| e.start);
        Ok(out)
    }

    fn dedupe_secret(&self) -> Result<Secret> {
        secret(&self.read()?.dedupe_secret)
    }

    fn rotate(&mut self, now: i64) -> Result<(EpochId, EpochId)> {
        self.update(|v| {
            let next = v.epochs.iter().map(|e| e.id).max().unwrap_or(0) + 1;
            let open = v
                .epochs
                .iter_mut()
                .find(|e| e.end == OPEN_END)
                .ok_or_else(|| StoreError::Corrupt("the vault has no open epoch".into()))?;
            // An epoch is never empty: a rotation in the same second as the last one
            // (or with a clock that went back) starts the new epoch just after it.
            let at = now.max(open.start.saturating_add(1));
            open.end = at;
            let ended = EpochId(open.id);
            v.epochs.push(fresh_epoch(next, at, now));
            Ok((ended, EpochId(next)))
        })
    }

    fn shred(&mut self, epochs: &[EpochId], now: i64) -> Result<Vec<EpochId>> {
        self.update(|v| {
            let mut done = Vec::new();
            for e in v.epochs.iter_mut() {
                if !epochs.contains(&EpochId(e.id)) || e.end == OPEN_END {
                    continue;
                }
                if e.hmac_key.take().is_some() | e.data_key.take().is_some() {
                    e.shredded_at = Some(now);
                    done.push(EpochId(e.id));
                }
            }
            Ok(done)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_and_shred_persist_and_the_file_keeps_no_destroyed_key() {
        let dir = tempfile::tempdir().unwrap();
        let vdir = dir.path().join("vault");
        let mut v = FileVault::create(&vdir, 1_000).unwrap();
        assert!(
            FileVault::create(&vdir, 1_000).is_err(),
            "never overwritten"
        );
        let first = v.epochs().unwrap()[0].keys.clone().unwrap();
        assert_eq!(v.rotate(2_000).unwrap(), (EpochId(1), EpochId(2)));
        // The open epoch cannot be shredded.
        assert!(v.shred(&[EpochId(2)], 3_000).unwrap().is_empty());
        assert_eq!(v.shred(&[EpochId(1)], 3_000).unwrap(), vec![EpochId(1)]);
        assert!(v.shred(&[EpochId(1)], 3_001).unwrap().is_empty());
        let again = FileVault::open(&vdir).unwrap();
        let es = again.epochs().unwrap();
        assert_eq!((es[0].end, es[1].start), (2_000, 2_000));
        assert!(es[0].keys.is_none() && es[0].shredded_at == Some(3_000));
        assert!(es[1].keys.is_some());
        let bytes = std::fs::read(FileVault::file_path(&vdir)).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains(&hex::encode(first.hmac.expose())));
        assert!(!text.contains(&hex::encode(first.data.expose())));
        assert!(!vdir.join("keys.json.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(FileVault::file_path(&vdir))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the vault file is private to its owner");
        }
    }

    #[test]
    fn a_missing_or_damaged_vault_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            FileVault::open(&dir.path().join("none")),
            Err(StoreError::VaultMissing(_))
        ));
        let vdir = dir.path().join("v");
        FileVault::create(&vdir, 0).unwrap();
        std::fs::write(FileVault::file_path(&vdir), "{\"format\": 1, ").unwrap();
        let e = FileVault::open(&vdir).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn a_rotation_in_the_same_second_still_gives_a_nonempty_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = FileVault::create(&dir.path().join("v"), 0).unwrap();
        v.rotate(100).unwrap();
        v.rotate(100).unwrap();
        let es = v.epochs().unwrap();
        assert_eq!(
            es.iter().map(|e| (e.start, e.end)).collect::<Vec<_>>(),
            vec![(i64::MIN, 100), (100, 101), (101, OPEN_END)]
        );
    }
}
