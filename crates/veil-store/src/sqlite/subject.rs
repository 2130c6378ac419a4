//! What a data-subject request needs from the embedded store: every per-contributor
//! record, decrypted, and an erasure that rewrites staging segments and contribution runs
//! without one person's rows — re-encrypted under the same epoch key, in one transaction
//! with its audit entry. Which rows are the person's is decided by the caller
//! (`veil-govern`), from pseudonyms it computes; this module never sees an identifier.

use super::{append_audit, segment_aad, SqliteStore};
use crate::contrib::{decode, open_run, seal_run, RunWriter};
use crate::{crypto, ContribRecord, Result, StagedRow, StoreError};
use rusqlite::{params, TransactionBehavior};
use std::collections::HashMap;
use veil_pipeline::{ContributorId, EpochId, KeyRing, Secret};

fn data_keys(keys: &KeyRing) -> HashMap<u32, Secret> {
    keys.epochs()
        .filter_map(|e| Some((e.id.0, e.keys.as_ref()?.data.clone())))
        .collect()
}

pub(super) fn contributor_records(s: &SqliteStore, keys: &KeyRing) -> Result<Vec<ContribRecord>> {
    let dk = data_keys(keys);
    let key_of = |e: u32| dk.get(&e).cloned();
    let mut st = s
        .conn
        .prepare("SELECT metric, window_start, data FROM staging_contrib ORDER BY id")?;
    let mut rows = st.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let (metric, w, stored): (String, i64, Vec<u8>) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let Some((plain, legacy)) = open_run(&key_of, &metric, w, &stored)? else {
            continue; // shredded
        };
        if legacy {
            continue; // written before contributor ids: sealed long ago in practice
        }
        decode(&plain, &mut |g, c, bin, n, total| {
            out.push(ContribRecord {
                metric: metric.clone(),
                window_start: w,
                group: g.to_owned(),
                contributor: ContributorId::from_bytes(c),
                bin,
                n,
                total,
            })
        })?;
    }
    Ok(out)
}

/// Rewrites every staging segment and contribution run holding a row `staged` or
/// `contrib` selects, without those rows, and appends `action` with `detail` plus the
/// counts — all in one transaction. Returns (staged events, contribution records) erased.
#[allow(clippy::too_many_arguments)]
pub(super) fn erase(
    s: &mut SqliteStore,
    keys: &KeyRing,
    staged: &dyn Fn(&str, &StagedRow) -> bool,
    contrib: &dyn Fn(&str, i64, &ContributorId) -> bool,
    actor: &str,
    action: &str,
    detail: &serde_json::Value,
    now: i64,
) -> Result<(usize, usize)> {
    let dk = data_keys(keys);
    let tx = s
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut events = 0usize;
    // Staging: each segment holding a selected event is rewritten in the plain JSON
    // segment format (header of column names, one array per event), re-encrypted under
    // its epoch's key with a fresh nonce, or deleted when nothing is left.
    let segs: Vec<(i64, String, u32, i64, Vec<u8>, Vec<u8>)> = tx
        .prepare("SELECT id, collection, epoch, day, nonce, ciphertext FROM staging_segments")?
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<std::result::Result<_, _>>()?;
    for (id, collection, epoch, day, nonce, ct) in segs {
        let Some(k) = dk.get(&epoch) else { continue };
        let aad = segment_aad(&collection, epoch, day);
        let plain = crypto::open(k, &aad, &nonce, &ct)
            .ok_or_else(|| StoreError::Corrupt("a staging segment failed authentication".into()))?;
        let rows = veil_pipeline::staging::decode_segment(&plain, day)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (gone, kept): (Vec<_>, Vec<_>) = rows.into_iter().partition(|e| {
            staged(
                &collection,
                &StagedRow {
                    segment: id,
                    epoch: EpochId(epoch),
                    time: e.time,
                    attrs: e.attrs.clone(),
                },
            )
        });
        if gone.is_empty() {
            continue;
        }
        events += gone.len();
        if kept.is_empty() {
            tx.execute("DELETE FROM staging_segments WHERE id = ?1", [id])?;
            continue;
        }
        let mut names: Vec<String> = Vec::new();
        for e in &kept {
            for k in e.attrs.keys() {
                if !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
        let mut text = serde_json::to_string(
            &std::iter::once("time".to_owned())
                .chain(names.iter().cloned())
                .collect::<Vec<_>>(),
        )
        .expect("names serialize");
        for e in &kept {
            let row: Vec<serde_json::Value> = std::iter::once(serde_json::Value::from(e.time))
                .chain(
                    names
                        .iter()
                        .map(|n| e.attrs.get(n).cloned().unwrap_or(serde_json::Value::Null)),
                )
                .collect();
            text.push('\n');
            text.push_str(&serde_json::to_string(&row).expect("a row serializes"));
        }
        let (nonce, ct) = crypto::seal(k, &aad, text.as_bytes());
        tx.execute(
            "UPDATE staging_segments SET events = ?1, nonce = ?2, ciphertext = ?3 WHERE id = ?4",
            params![kept.len() as i64, nonce, ct, id],
        )?;
    }
    // Per-contributor state: each run holding a selected record is re-encoded without it.
    let mut records = 0usize;
    let runs: Vec<(i64, String, i64, Vec<u8>)> = tx
        .prepare("SELECT id, metric, window_start, data FROM staging_contrib")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<std::result::Result<_, _>>()?;
    let key_of = |e: u32| dk.get(&e).cloned();
    for (id, metric, w, stored) in runs {
        let Some((plain, legacy)) = open_run(&key_of, &metric, w, &stored)? else {
            continue;
        };
        if legacy || stored.len() < 5 {
            continue;
        }
        let epoch = u32::from_le_bytes(stored[1..5].try_into().expect("four bytes"));
        let mut kept = RunWriter::default();
        let mut groups: HashMap<String, u32> = HashMap::new();
        let mut gone = 0usize;
        decode(&plain, &mut |g, c, bin, n, total| {
            if contrib(&metric, w, &ContributorId::from_bytes(c)) {
                gone += 1;
                return;
            }
            let next = groups.len() as u32;
            let gid = *groups.entry(g.to_owned()).or_insert(next);
            kept.push(gid, g, &c, bin, n, total);
        })?;
        if gone == 0 {
            continue;
        }
        records += gone;
        if kept.rows == 0 {
            tx.execute("DELETE FROM staging_contrib WHERE id = ?1", [id])?;
            continue;
        }
        let rows = kept.rows;
        let key = dk.get(&epoch).expect("opened with it");
        let sealed = seal_run(key, epoch, &metric, w, &kept.finish());
        tx.execute(
            "UPDATE staging_contrib SET rows = ?1, data = ?2 WHERE id = ?3",
            params![rows, sealed, id],
        )?;
    }
    let mut detail = detail.clone();
    detail["staged_events"] = events.into();
    detail["contribution_records"] = records.into();
    let e = append_audit(&tx, actor, action, &detail, now)?;
    tx.commit()?;
    s.write_head(&e)?;
    let _ = s.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
    Ok((events, records))
}
