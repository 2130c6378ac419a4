//! Retention on the embedded store: one transaction deletes every row past its
//! retention (or, dry, counts them and rolls back), then the vault destroys the keys of
//! epochs nothing needs any more. Rows first, keys second: a crash in between leaves
//! keys a later purge destroys, never rows whose keys are gone without it being audited.

use super::{append_audit, rfc3339, SqliteStore};
use crate::retention::{Cutoffs, PurgeMode, PurgeReport};
use crate::{Result, Store};
use rusqlite::{params, Transaction, TransactionBehavior};
use std::collections::BTreeSet;
use veil_policy::Policy;

pub(super) fn run(
    s: &mut SqliteStore,
    policy: &Policy,
    now: i64,
    actor: &str,
    mode: PurgeMode,
) -> Result<PurgeReport> {
    let cut = Cutoffs::new(policy, now);
    let epochs = s.vault.epochs()?;
    let chain = s.audit_entries(&["release", "policy_load"])?;
    let mut report = PurgeReport {
        dry_run: mode == PurgeMode::DryRun,
        ..Default::default()
    };
    let tx = s
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)?;
    delete_staging(&tx, &cut, &mut report)?;
    // Idempotency ids of events the door refuses as too old protect nothing (a minute of
    // margin: the door compares seconds, runs record minutes).
    let before_minute = (now - cut.longest_staging()).div_euclid(60) - 1;
    (report.dedupe_runs, report.dedupe_ids) = s.seen.prune(&tx, before_minute)?;
    delete_orphan_contrib(&tx, policy, &cut, &mut report)?;
    delete_quarantine(&tx, &cut, &mut report)?;
    delete_aggregates(&tx, &cut, &mut report)?;
    delete_releases(&tx, &chain, now, &mut report)?;
    // The epochs past retention whose keys nothing left in this transaction needs.
    let sealed = super::sealed_before_in(&tx, policy)?;
    let mut shred = Vec::new();
    for e in epochs
        .iter()
        .filter(|e| e.keys.is_some() && e.end != i64::MAX)
    {
        if !cut.epoch_expired(e.end) {
            continue;
        }
        let staged: i64 = tx.query_row(
            "SELECT COUNT(*) FROM staging_segments WHERE epoch = ?1",
            [e.id.0],
            |r| r.get(0),
        )?;
        // Per-contributor state is keyed by the epoch of its window's start, and sealed
        // with that epoch's data key (byte 0 = 2, bytes 1..5 = the epoch, little-endian;
        // a gateway with a stale key ring may have used an epoch for a later window).
        let unsealed: i64 = tx.query_row(
            "SELECT COUNT(*) FROM staging_contrib WHERE window_start < ?1
               OR (substr(data, 1, 1) = x'02' AND substr(data, 2, 4) = ?2)",
            params![e.end, &e.id.0.to_le_bytes()[..]],
            |r| r.get(0),
        )?;
        // A window that started in the epoch and is not sealed yet can still receive
        // events (their contributor ids need the epoch's key) even with no state stored.
        let open_window = policy.metrics().zip(&sealed).any(|((_, m), before)| {
            let w = veil_pipeline::window::start(m.window, e.end - 1);
            *before < veil_pipeline::window::end(m.window, w)
        });
        if staged > 0 {
            report.epochs_held.push((
                e.id.0,
                format!("{staged} staged events of it are not past their retention yet"),
            ));
        } else if unsealed > 0 || open_window {
            report.epochs_held.push((
                e.id.0,
                "windows that started in it are not sealed yet (run `veil seal`)".into(),
            ));
        } else {
            shred.push(e.id);
        }
    }
    report.epochs_shredded = shred.iter().map(|e| e.0).collect();
    if mode == PurgeMode::DryRun {
        tx.rollback()?;
        return Ok(report);
    }
    let rows_went = !PurgeReport {
        epochs_shredded: Vec::new(),
        ..report.clone()
    }
    .is_empty();
    let mut head = None;
    if rows_went || mode == PurgeMode::Run {
        let detail = serde_json::json!({
            "staging_events": report.staging_events,
            "dedupe_runs": report.dedupe_runs,
            "dedupe_ids": report.dedupe_ids,
            "contributor_runs": report.contributor_runs,
            "quarantine_rows": report.quarantine_rows,
            "aggregate_rows": report.aggregate_rows,
            "releases": report.releases,
            "dedupe_older_than": rfc3339(before_minute * 60),
        });
        head = Some(append_audit(&tx, actor, "purge", &detail, now)?);
    }
    if !shred.is_empty() {
        // Audited with the rows, before the vault destroys the keys: a crash in between
        // leaves an audited destruction the next purge completes, never an unaudited one.
        let detail = serde_json::json!({
            "epochs": report.epochs_shredded,
            "reason": "past the longest staging retention; nothing left needs the keys",
        });
        head = Some(append_audit(&tx, actor, "key_shred", &detail, now)?);
    }
    match head {
        Some(e) => {
            tx.commit()?;
            s.write_head(&e)?;
            s.seen.pruned(&s.conn.transaction()?)?;
        }
        None => tx.rollback()?,
    }
    if !shred.is_empty() {
        s.vault.shred(&shred, now)?;
    }
    if rows_went {
        // Deleted pages are zeroed (secure_delete); fold the WAL back so no older copy of
        // them stays in it. Busy readers only delay this to the next checkpoint.
        let _ = s.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
    }
    Ok(report)
}

fn delete_staging(tx: &Transaction, cut: &Cutoffs, report: &mut PurgeReport) -> Result<()> {
    let collections: Vec<String> = tx
        .prepare("SELECT DISTINCT collection FROM staging_segments")?
        .query_map([], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    for c in collections {
        let day = cut.staging_day(&c);
        let events: i64 = tx.query_row(
            "SELECT COALESCE(SUM(events), 0) FROM staging_segments WHERE collection = ?1 AND day < ?2",
            params![c, day],
            |r| r.get(0),
        )?;
        if events > 0 {
            tx.execute(
                "DELETE FROM staging_segments WHERE collection = ?1 AND day < ?2",
                params![c, day],
            )?;
            report.staging_events.insert(c, events);
        }
    }
    Ok(())
}

/// Per-contributor state of a metric the policy no longer declares is never sealed:
/// once its window is past the longest staging retention it goes.
fn delete_orphan_contrib(
    tx: &Transaction,
    policy: &Policy,
    cut: &Cutoffs,
    report: &mut PurgeReport,
) -> Result<()> {
    let declared: BTreeSet<&str> = policy.metrics().map(|(_, m)| m.name.as_str()).collect();
    let metrics: Vec<String> = tx
        .prepare("SELECT DISTINCT metric FROM staging_contrib")?
        .query_map([], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    // Windows starting before this ended (a month is the longest window) before the
    // longest staging retention began.
    let before = cut.now() - cut.longest_staging() - 31 * 86_400;
    for m in metrics.iter().filter(|m| !declared.contains(m.as_str())) {
        report.contributor_runs += tx.execute(
            "DELETE FROM staging_contrib WHERE metric = ?1 AND window_start < ?2",
            params![m, before],
        )? as i64;
    }
    Ok(())
}

fn delete_quarantine(tx: &Transaction, cut: &Cutoffs, report: &mut PurgeReport) -> Result<()> {
    let collections: Vec<Option<String>> = tx
        .prepare("SELECT DISTINCT collection FROM quarantine")?
        .query_map([], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    for c in collections {
        let before = cut.quarantine_before(c.as_deref());
        report.quarantine_rows += tx.execute(
            "DELETE FROM quarantine WHERE collection IS ?1 AND received_at < ?2",
            params![c, before],
        )? as i64;
    }
    Ok(())
}

fn delete_aggregates(tx: &Transaction, cut: &Cutoffs, report: &mut PurgeReport) -> Result<()> {
    let windows: Vec<(String, i64)> = tx
        .prepare("SELECT DISTINCT metric, window_start FROM aggregates")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<std::result::Result<_, _>>()?;
    for (m, start) in windows {
        if cut.aggregate_expired(&m, start) {
            let n = tx.execute(
                "DELETE FROM aggregates WHERE metric = ?1 AND window_start = ?2",
                params![m, start],
            )? as i64;
            *report.aggregate_rows.entry(m).or_default() += n;
        }
    }
    Ok(())
}

/// A stored release goes when the audit chain proves it past the aggregate retention
/// (`audit::PurgeProof`: its recorded windows, a month at most each, ended more than
/// the retention the last `policy_load` recorded ago), so `audit verify` accepts exactly
/// what the purge deleted. A release the chain cannot date (stored before releases
/// recorded their windows) is kept. Its audit entry stays; the `purge` entry lists it.
fn delete_releases(
    tx: &Transaction,
    chain: &[crate::AuditEntry],
    now: i64,
    report: &mut PurgeReport,
) -> Result<()> {
    let ids: Vec<String> = tx
        .prepare("SELECT release_id FROM releases ORDER BY release_id")?
        .query_map([], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    let proof = crate::audit::PurgeProof::new(chain);
    for id in ids {
        if proof.proven(&id, now, i64::MAX) {
            tx.execute("DELETE FROM release_windows WHERE release_id = ?1", [&id])?;
            tx.execute("DELETE FROM release_index WHERE release_id = ?1", [&id])?;
            tx.execute("DELETE FROM releases WHERE release_id = ?1", [&id])?;
            report.releases.push(id);
        }
    }
    Ok(())
}
