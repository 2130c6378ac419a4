//! Data-subject requests (spec §5): from a raw identifier such as an email, normalized
//! as the door normalizes it, Veil computes the person's pseudonym under every epoch
//! whose keys still exist and finds what it holds linked to them — staged events and
//! per-contributor state — to export or erase it. Aggregates are never touched: they
//! hold no one. The identifier itself is never stored, logged or audited.

use crate::Result;
use std::borrow::Cow;
use std::collections::HashMap;
use veil_pipeline::{ContributorId, EpochId, Identifier, KeyRing};
use veil_policy::Policy;
use veil_store::{ContribRecord, StagedRow, Store};

/// Audit action of an export.
pub const EXPORT: &str = "subject_export";
/// Audit action of an erasure (written by the store with its counts).
pub const ERASE: &str = "subject_erase";

/// One person's pseudonyms: per epoch, and per normalization (a field may turn it off).
struct Subject<'a> {
    raw: &'a str,
    keys: &'a KeyRing,
    /// (epoch, normalized) → encoded pseudonym.
    pseudonyms: HashMap<(EpochId, bool), String>,
}

impl<'a> Subject<'a> {
    fn new(raw: &'a str, keys: &'a KeyRing) -> Self {
        let mut pseudonyms = HashMap::new();
        for e in keys.epochs().filter(|e| e.keys.is_some()) {
            for norm in [true, false] {
                let id = Identifier::new(Cow::Borrowed(raw), norm);
                if let Some((ep, p)) = keys.pseudonym_at(e.start, &id) {
                    pseudonyms.insert((ep, norm), p.encode());
                }
            }
        }
        Subject {
            raw,
            keys,
            pseudonyms,
        }
    }

    /// Whether a staged event names this person: any of its values is the person's
    /// pseudonym of the row's epoch, under either normalization. Not only the fields
    /// today's policy declares as identifiers: a field renamed, a collection removed or a
    /// normalization setting changed since must not hide a row from an erasure (a
    /// pseudonym is 128 random-looking bits; no other value equals one).
    fn staged(&self, row: &StagedRow) -> bool {
        let wanted: Vec<&str> = [true, false]
            .iter()
            .filter_map(|n| self.pseudonyms.get(&(row.epoch, *n)).map(String::as_str))
            .collect();
        row.attrs
            .values()
            .any(|v| v.as_str().is_some_and(|s| wanted.contains(&s)))
    }

    /// This person's contributor id in one metric's window.
    fn contributor(
        &self,
        policy: &Policy,
        metric: &str,
        window_start: i64,
    ) -> Option<ContributorId> {
        let (c, m) = policy.metric(metric)?;
        let norm = c
            .fields
            .get(m.contributor)
            .map(|f| f.normalize())
            .unwrap_or(true);
        let id = Identifier::new(Cow::Borrowed(self.raw), norm);
        let event = self.keys.pseudonym_at(window_start, &id)?;
        let mk = self.keys.metric_keys(metric, i64::MIN);
        self.keys.contributor(&mk, window_start, &id, event)
    }
}

/// Everything Veil holds linked to one identifier, in every live epoch.
#[derive(Debug, serde::Serialize)]
pub struct Export {
    /// Epochs searched (their keys exist) and epochs that cannot be searched any more.
    pub epochs_searched: Vec<u32>,
    pub epochs_shredded: Vec<u32>,
    /// Staged events by collection: pseudonymous, as stored.
    pub staging: std::collections::BTreeMap<String, Vec<StagedRow>>,
    /// Contributions to open windows, kept until the window is sealed.
    pub per_contributor_state: Vec<ContribRecord>,
    /// Idempotency entries are keyed digests of (source, event id): no entry is linked
    /// to a person, so none is listed.
    pub dedupe_entries: usize,
    /// No collection keeps a reversible identifier map, so the vault holds nothing of
    /// anyone: only keys.
    pub vault_entries: usize,
}

fn find(store: &dyn Store, policy: &Policy, keys: &KeyRing, raw: &str) -> Result<Export> {
    let s = Subject::new(raw, keys);
    let mut staging = std::collections::BTreeMap::new();
    // Every collection with staged rows, declared today or not.
    let mut names: Vec<String> = policy
        .collections()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    names.extend(store.staging_summary()?.into_iter().map(|(c, ..)| c));
    names.sort();
    names.dedup();
    for c in names {
        let rows: Vec<StagedRow> = store
            .staging_events(&c, keys)?
            .into_iter()
            .filter(|r| s.staged(r))
            .collect();
        if !rows.is_empty() {
            staging.insert(c, rows);
        }
    }
    let mut ids: HashMap<(String, i64), Option<ContributorId>> = HashMap::new();
    let per_contributor_state = store
        .contributor_records(keys)?
        .into_iter()
        .filter(|r| {
            let id = ids
                .entry((r.metric.clone(), r.window_start))
                .or_insert_with(|| s.contributor(policy, &r.metric, r.window_start));
            *id == Some(r.contributor)
        })
        .collect();
    Ok(Export {
        epochs_searched: keys
            .epochs()
            .filter(|e| e.keys.is_some())
            .map(|e| e.id.0)
            .collect(),
        epochs_shredded: keys
            .epochs()
            .filter(|e| e.keys.is_none())
            .map(|e| e.id.0)
            .collect(),
        staging,
        per_contributor_state,
        dedupe_entries: 0,
        vault_entries: 0,
    })
}

/// `veil subject export ID`: everything linked to `raw` (audited with counts, never
/// the identifier).
pub fn export(
    store: &mut dyn Store,
    policy: &Policy,
    keys: &KeyRing,
    actor: &str,
    raw: &str,
    now: i64,
) -> Result<Export> {
    let x = find(store, policy, keys, raw)?;
    let detail = serde_json::json!({
        "staged_events": x.staging.values().map(Vec::len).sum::<usize>(),
        "contribution_records": x.per_contributor_state.len(),
        "epochs_searched": x.epochs_searched,
    });
    store.audit(actor, EXPORT, &detail, now)?;
    Ok(x)
}

/// `veil subject erase ID`: deletes every staged event and contribution record linked
/// to `raw` in the live epochs, in one audited transaction; returns (events, records).
pub fn erase(
    store: &mut dyn Store,
    policy: &Policy,
    keys: &KeyRing,
    actor: &str,
    raw: &str,
    now: i64,
) -> Result<(usize, usize)> {
    let s = Subject::new(raw, keys);
    let ids: std::cell::RefCell<HashMap<(String, i64), Option<ContributorId>>> = Default::default();
    let searched: Vec<u32> = keys
        .epochs()
        .filter(|e| e.keys.is_some())
        .map(|e| e.id.0)
        .collect();
    let detail = serde_json::json!({"epochs_searched": searched});
    Ok(store.erase(
        keys,
        &|_, row| s.staged(row),
        &|metric, w, c| {
            let mut ids = ids.borrow_mut();
            let id = ids
                .entry((metric.to_owned(), w))
                .or_insert_with(|| s.contributor(policy, metric, w));
            *id == Some(*c)
        },
        actor,
        &detail,
        now,
    )?)
}

/// `veil subject opt-out ID`: from now on, events naming `raw` in any pseudonymized
/// identifier are dropped at the door and counted as `opted_out`, in every epoch present
/// and future. What was stored before stays until erased or purged. Returns whether the
/// opt-out is new. The store keeps only a keyed digest; the audit entry not even that.
pub fn opt_out(
    store: &mut dyn Store,
    policy: &Policy,
    keys: &KeyRing,
    actor: &str,
    raw: &str,
    now: i64,
) -> Result<bool> {
    // Both spellings, whatever today's policy says: a field added later with
    // normalization turned off is covered too. One digest when they coincide.
    let _ = policy;
    let mut digests: Vec<[u8; 16]> = [true, false]
        .iter()
        .map(|n| keys.opt_out_digest(&Identifier::new(Cow::Borrowed(raw), *n)))
        .collect();
    digests.dedup();
    let mut new = false;
    for d in digests {
        new |= store.add_opt_out(d, actor, now)?;
    }
    Ok(new)
}
