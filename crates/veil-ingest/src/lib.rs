//! Ingest: bounded line reading, the door, batched atomic commits. The one code path every
//! ingest takes: `veil ingest`, the collectors, the benchmarks and the gateway's handlers
//! all admit events with [`admit_lines`] (or the door directly for OTLP records and
//! collected events) and commit with [`Store::ingest`]. It depends on the door and the
//! store only, so a collector needs no server stack.

use std::io::BufRead;
use veil_pipeline::{AcceptedBatch, Door, KeyRing, Limits, MissingId, Rejection, Source};
use veil_policy::Policy;
use veil_store::{IngestBatch, IngestOutcome, Store};

/// Lines committed per transaction.
pub const BATCH: usize = 32_768;

/// Reads one line into `buf`, keeping at most `limit + 1` bytes of it so a huge line
/// cannot exhaust memory. Returns `None` at end of input.
pub fn read_line_bounded(
    r: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Option<()>> {
    buf.clear();
    let mut any = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(any.then_some(()));
        }
        any = true;
        let room = (limit + 1).saturating_sub(buf.len());
        match memchr_nl(avail) {
            Some(i) => {
                buf.extend_from_slice(&avail[..i.min(room)]);
                r.consume(i + 1);
                return Ok(Some(()));
            }
            None => {
                let n = avail.len();
                buf.extend_from_slice(&avail[..n.min(room)]);
                r.consume(n);
            }
        }
    }
}

/// The input without a leading UTF-8 byte-order mark (editors on Windows write one).
pub fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xef\xbb\xbf").unwrap_or(b)
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// Why a stream could not be ingested (a rejected event is not an error).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot read the input: {0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Store(#[from] veil_store::StoreError),
    #[error("cannot start the commit thread: {0}")]
    Spawn(std::io::Error),
}

/// Events of one request body, admitted: what to commit, and each rejection with the
/// 0-based index of its event.
#[derive(Default)]
pub struct Admitted {
    pub accepted: AcceptedBatch,
    pub rejected: Vec<(usize, Rejection)>,
    /// Events seen (accepted + rejected).
    pub events: usize,
}

impl Admitted {
    /// Runs the next event, one JSON object, through the door. `missing` identifies it
    /// when it carries no `id`.
    pub fn line(&mut self, door: &Door, source: &Source, line: &[u8], missing: MissingId<'_>) {
        let verdict = door.admit_into(line, source, missing, &mut self.accepted);
        self.record(verdict);
    }

    /// Runs the next event, already decoded into an envelope (OTLP), through the door.
    pub fn envelope(
        &mut self,
        door: &Door,
        source: &Source,
        env: &veil_pipeline::envelope::Envelope<'_>,
    ) {
        let verdict = door.admit_envelope_into(env, source, &mut self.accepted);
        self.record(verdict);
    }

    fn record(&mut self, verdict: Result<(), Rejection>) {
        if let Err(r) = verdict {
            self.rejected.push((self.events, r));
        }
        self.events += 1;
    }
}

/// Adds the events the commit found `late` to a request's rejections, by their index in
/// the request. `late` holds positions among the request's accepted events (as the
/// store reports them); `rejected` holds the door's rejections by index, in order, and
/// stays in index order.
pub fn merge_late(rejected: &mut Vec<(usize, Rejection)>, late: &[usize]) {
    if late.is_empty() {
        return;
    }
    let mut late = late.to_vec();
    late.sort_unstable();
    late.dedup();
    let mut door = std::mem::take(rejected).into_iter().peekable();
    let mut out = Vec::with_capacity(door.len() + late.len());
    let (mut index, mut passed) = (0, 0); // the next event's index; accepted events before it
    for at in late {
        loop {
            match door.peek() {
                Some((i, _)) if *i == index => out.extend(door.next()),
                _ if passed == at => break,
                _ => passed += 1,
            }
            index += 1;
        }
        out.push((index, Rejection::late(None)));
        index += 1;
        passed += 1;
    }
    out.extend(door);
    *rejected = out;
}

/// Runs each NDJSON line of `body` through the door. Blank lines are skipped and not
/// counted; `id_prefix` (from an `Idempotency-Key`) names events that carry no id, so a
/// retried request is deduplicated as a whole.
pub fn admit_lines(door: &Door, source: &Source, body: &[u8], id_prefix: Option<&str>) -> Admitted {
    let mut out = Admitted::default();
    for line in strip_bom(body).split(|&b| b == b'\n') {
        let line = trim_cr(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let default_id = id_prefix.map(|p| format!("{p}:{}", out.events));
        let missing = default_id
            .as_deref()
            .map_or(MissingId::Unidentified, MissingId::Named);
        out.line(door, source, line, missing);
    }
    out
}

/// One rejected line: its 1-based line number and the rejection.
pub type Rejected = (u64, Rejection);

/// Runs a whole NDJSON stream through the door into the store, batch by batch. The door
/// admits the next batch while the previous one commits (see [`pipelined`]).
/// `on_reject` sees each rejection (for printing): the door's as they happen, then the
/// events the commit found `late` (the first [`LATE_KEPT`]); the outcome sums every batch.
#[allow(clippy::too_many_arguments)]
pub fn ingest_stream(
    store: &mut (dyn Store + Send),
    policy: &Policy,
    keys: &KeyRing,
    limits: Limits,
    source: &Source,
    input: &mut dyn BufRead,
    now: i64,
    on_reject: &mut dyn FnMut(&Rejected),
) -> Result<IngestOutcome, IngestError> {
    let sealed = store.sealed_before(policy).map_err(IngestError::Store)?;
    let door = Door::new(policy, keys, limits, now, sealed);
    let ((), total) = pipelined(store, policy, keys, |commit| {
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        let mut events = 0u64;
        let mut done = false;
        while !done {
            let mut batch = commit.batch(&source.name, now);
            // Each accepted event's line, so one the commit finds late is reported there.
            let mut accepted_lines = commit.positions();
            let mut lines = 0;
            while lines < BATCH {
                if read_line_bounded(input, &mut buf, limits.max_event_bytes)
                    .map_err(IngestError::Read)?
                    .is_none()
                {
                    done = true;
                    break;
                }
                line_no += 1;
                let line = trim_cr(if line_no == 1 { strip_bom(&buf) } else { &buf });
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                lines += 1;
                // An event without an id is identified by its bytes and line number, so
                // ingesting the same file again counts nothing twice.
                events += 1;
                let missing = MissingId::Content { position: events };
                match door.admit_into(line, source, missing, &mut batch.accepted) {
                    Ok(()) => accepted_lines.push(line_no),
                    Err(r) => {
                        on_reject(&(line_no, r.clone()));
                        batch.rejected.push(r);
                    }
                }
            }
            if lines == 0 {
                break;
            }
            if !commit.send_numbered(batch, accepted_lines) {
                break; // the writer failed; its error is what the caller sees
            }
        }
        Ok(())
    })?;
    // Events a seal overtook between the door and the commit, at their lines.
    let late = Rejection::late(None);
    for &line in &total.late {
        on_reject(&(line as u64, late.clone()));
    }
    Ok(total)
}

/// A batch on its way to the commit, with each accepted event's position in the
/// caller's input (empty when the caller does not number them).
struct Numbered<'s> {
    batch: IngestBatch<'s>,
    positions: Vec<u64>,
}

/// Hands batches to the committing thread of [`pipelined`] and takes them back empty.
pub struct Committer<'s> {
    tx: std::sync::mpsc::SyncSender<Numbered<'s>>,
    back: std::sync::mpsc::Receiver<Numbered<'s>>,
    /// Batches made so far; past [`IN_FLIGHT`] the next one is a committed one.
    made: usize,
    /// The position list of the batch [`Committer::batch`] last took back, kept for reuse.
    spare: Vec<u64>,
}

/// Batches in circulation: one being filled, one queued, one being committed.
const IN_FLIGHT: usize = 3;

/// Positions of late events a [`pipelined`] total keeps: a long ingest that a seal
/// overtook reports its first ones by line and counts all of them, in bounded memory.
pub const LATE_KEPT: usize = 1_000;

impl<'s> Committer<'s> {
    /// Queues a batch for commit, waiting while one is already queued. `false` means the
    /// committing thread has stopped on an error: stop producing, the error follows.
    pub fn send(&mut self, batch: IngestBatch<'s>) -> bool {
        self.send_numbered(batch, Vec::new())
    }

    /// As [`Committer::send`], with each accepted event's position in the caller's input
    /// (its line, say), in the order admitted: events the commit finds `late` are then
    /// reported at these positions in the outcome's `late`.
    pub fn send_numbered(&mut self, batch: IngestBatch<'s>, positions: Vec<u64>) -> bool {
        self.tx.send(Numbered { batch, positions }).is_ok()
    }

    /// An empty position list for the next [`Committer::send_numbered`], reusing the
    /// memory of a committed batch's list when one came back.
    pub fn positions(&mut self) -> Vec<u64> {
        let mut p = std::mem::take(&mut self.spare);
        p.clear();
        p
    }

    /// An empty batch to fill next: a committed one once [`IN_FLIGHT`] exist (waiting
    /// for the oldest commit when none is back yet), else a new one. A committed batch
    /// is emptied here, on the thread that filled it, and keeps its memory: no
    /// cross-thread frees, no buffers growing into fresh pages batch after batch.
    pub fn batch(&mut self, source: &'s str, received_at: i64) -> IngestBatch<'s> {
        let back = if self.made < IN_FLIGHT {
            self.back.try_recv().ok()
        } else {
            self.back.recv().ok() // `None` only when the writer stopped; `send` then says so
        };
        let (accepted, rejected) = match back {
            Some(Numbered {
                batch: mut b,
                positions,
            }) => {
                b.accepted.clear();
                b.rejected.clear();
                self.spare = positions;
                (b.accepted, b.rejected)
            }
            None => {
                self.made += 1;
                (AcceptedBatch::default(), Vec::new())
            }
        };
        IngestBatch {
            source,
            received_at,
            accepted,
            rejected,
        }
    }
}

/// Runs `produce` on this thread while a second thread commits what it sends, in order,
/// one batch per transaction. The door's work on the next batch then overlaps the
/// commit's wait for the disk (the fsync that makes a batch durable): on one core that
/// wait is otherwise idle, on two the stages run side by side. At most one batch waits
/// between them and [`IN_FLIGHT`] batches circulate, so memory stays at three batches.
///
/// A commit error stops the pipeline and is returned (batches committed before it stay
/// committed, as with sequential commits); a produce error is returned after the batches
/// already sent are committed.
///
/// The total's `late` holds the positions the producer gave with
/// [`Committer::send_numbered`] (positions in its batch where it gave none), at most
/// [`LATE_KEPT`] of them; `rejected` counts every one.
pub fn pipelined<'s, T>(
    store: &mut (dyn Store + Send),
    policy: &Policy,
    keys: &KeyRing,
    produce: impl FnOnce(&mut Committer<'s>) -> Result<T, IngestError>,
) -> Result<(T, IngestOutcome), IngestError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Numbered<'s>>(1);
    let (back_tx, back) = std::sync::mpsc::sync_channel::<Numbered<'s>>(IN_FLIGHT);
    std::thread::scope(|scope| {
        let writer = std::thread::Builder::new()
            .name("veil-commit".into())
            .spawn_scoped(scope, move || {
                let mut total = IngestOutcome::default();
                for sent in rx {
                    let batch = std::slice::from_ref(&sent.batch);
                    for mut o in store.ingest(policy, keys, batch)? {
                        let room = LATE_KEPT.saturating_sub(total.late.len());
                        o.late.truncate(room);
                        for at in &mut o.late {
                            *at = sent.positions.get(*at).map_or(*at, |&p| p as usize);
                        }
                        total.add(&o);
                    }
                    let _ = back_tx.try_send(sent); // when nobody takes it back, it is dropped here
                }
                Ok::<_, veil_store::StoreError>(total)
            })
            .map_err(IngestError::Spawn)?;
        let produced = produce(&mut Committer {
            tx,
            back,
            made: 0,
            spare: Vec::new(),
        });
        // `produce` consumed the sender: the writer ends once the queue is drained.
        let committed = writer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let total = committed.map_err(IngestError::Store)?;
        Ok((produced?, total))
    })
}

fn trim_cr(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\r").unwrap_or(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_store::SqliteStore;

    const POLICY: &str = r#"
version: 1
organization: Test
collections:
  - name: t.event
    purpose: { what: test events, question: does ingest work, audience: tests }
    lawful_basis: legitimate_interest
    lawful_basis_ref: DPIA-T
    owner: tests
    zone: operational
    fields:
      user:   { type: string, class: direct_identifier, transform: pseudonymize }
      region: { type: string, class: quasi_identifier, values: [eu, us] }
    metrics:
      - name: m
        kind: count
        by: [region]
        window: day
        contributor: user
        explain: { measures: a, does_not_mean: b, misread_when: c }
"#;

    /// `n` valid lines, then (when `fail`) a read error.
    struct Lines {
        data: std::io::Cursor<Vec<u8>>,
        fail: bool,
    }

    impl Lines {
        fn new(n: usize, fail: bool) -> Self {
            let t = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
            let mut data = Vec::new();
            for i in 0..n {
                data.extend_from_slice(
                    format!(r#"{{"event":"t.event","time":"{t}","id":"e{i}","attrs":{{"user":"u{}","region":"eu"}}}}"#, i % 50)
                        .as_bytes(),
                );
                data.push(b'\n');
            }
            Lines {
                data: std::io::Cursor::new(data),
                fail,
            }
        }
    }

    impl std::io::Read for Lines {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match std::io::Read::read(&mut self.data, buf)? {
                0 if self.fail => Err(std::io::Error::other("the disk went away")),
                n => Ok(n),
            }
        }
    }

    fn staged(store: &SqliteStore) -> i64 {
        store
            .connection()
            .query_row(
                "SELECT COALESCE(SUM(events), 0) FROM staging_segments",
                [],
                |r| r.get(0),
            )
            .unwrap()
    }

    fn run(store: &mut SqliteStore, input: Lines) -> Result<IngestOutcome, IngestError> {
        let now = chrono::Utc::now().timestamp();
        let policy = veil_policy::load_str(POLICY, "p.yaml", chrono::Utc::now().date_naive())
            .unwrap()
            .0;
        let keys = store.key_ring().unwrap();
        let source = Source {
            name: "test".into(),
            collections: None,
            consent: None,
        };
        let mut input = std::io::BufReader::new(input);
        ingest_stream(
            store,
            &policy,
            &keys,
            Limits::default(),
            &source,
            &mut input,
            now,
            &mut |_| {},
        )
    }

    #[test]
    fn pipelined_ingest_commits_every_batch_in_order_and_stops_cleanly_on_errors() {
        let dir = tempfile::tempdir().unwrap();
        let now = chrono::Utc::now().timestamp();
        let mut store = SqliteStore::init(
            &dir.path().join("data"),
            &dir.path().join("vault"),
            now,
            "test",
        )
        .unwrap();
        // Five batches, the last one short: more than circulate at once, so committed
        // batches come back and are refilled. All committed, each event once.
        let n = 4 * BATCH + 7;
        let o = run(&mut store, Lines::new(n, false)).unwrap();
        assert_eq!((o.accepted, o.duplicates), (n, 0));
        assert_eq!(staged(&store), n as i64);
        // A read error after one full batch: the batch sent before it is committed, the
        // partial one is not, and the error is the read's.
        let dir2 = tempfile::tempdir().unwrap();
        let mut store2 = SqliteStore::init(
            &dir2.path().join("data"),
            &dir2.path().join("vault"),
            now,
            "test",
        )
        .unwrap();
        let e = run(&mut store2, Lines::new(BATCH + 5, true)).unwrap_err();
        assert!(matches!(e, IngestError::Read(_)), "{e}");
        assert_eq!(staged(&store2), BATCH as i64);
        // A commit error stops the reader and is what the caller sees; nothing hangs.
        store2
            .connection()
            .execute_batch("DROP TABLE staging_contrib")
            .unwrap();
        let e = run(&mut store2, Lines::new(3 * BATCH, false)).unwrap_err();
        assert!(matches!(e, IngestError::Store(_)), "{e}");
        assert_eq!(
            staged(&store2),
            BATCH as i64,
            "the failed batch left nothing"
        );
    }

    /// Staging reads back every accepted event as the door minimized it, whichever of a
    /// batch's segments (one per day here) it landed in.
    #[test]
    fn staging_reads_back_every_event_of_every_segment() {
        let dir = tempfile::tempdir().unwrap();
        let now = chrono::Utc::now().timestamp();
        let mut store = SqliteStore::init(
            &dir.path().join("data"),
            &dir.path().join("vault"),
            now,
            "test",
        )
        .unwrap();
        let mut want = Vec::new();
        let mut data = Vec::new();
        for i in 0..300i64 {
            let t = now - (i % 3) * 86_400 - i;
            let stamp = chrono::DateTime::from_timestamp(t, 0).unwrap();
            let stamp = stamp.format("%Y-%m-%dT%H:%M:%SZ");
            let region = if i % 2 == 0 { "eu" } else { "us" };
            let attrs = format!(r#"{{"user":"u{}","region":"{region}"}}"#, i % 7);
            let line = format!(r#"{{"event":"t.event","time":"{stamp}","attrs":{attrs}}}"#);
            data.extend_from_slice(line.as_bytes());
            data.push(b'\n');
            want.push((t, region, i % 7));
        }
        let input = Lines {
            data: std::io::Cursor::new(data),
            fail: false,
        };
        assert_eq!(run(&mut store, input).unwrap().accepted, 300);
        let keys = store.key_ring().unwrap();
        let rows = store.staging_payloads("t.event", &keys).unwrap();
        let mut got = Vec::new();
        let mut pseudonym_of = std::collections::HashMap::new();
        for r in &rows {
            let r: serde_json::Value = serde_json::from_str(r).unwrap();
            let user = r["attrs"]["user"].as_str().unwrap().to_owned();
            assert_eq!(user.len(), 22, "a pseudonym, not the identifier");
            let t = r["time"].as_i64().unwrap();
            let region = r["attrs"]["region"].as_str().unwrap().to_owned();
            assert_eq!(r["attrs"].as_object().unwrap().len(), 2);
            got.push((t, region, user));
        }
        // Same events (segments reorder them by day), and one pseudonym per user.
        let mut w: Vec<_> = want.iter().map(|&(t, r, u)| (t, r.to_owned(), u)).collect();
        w.sort();
        got.sort();
        assert_eq!(got.len(), w.len());
        for ((t, r, p), (wt, wr, u)) in got.iter().zip(&w) {
            assert_eq!((t, r), (wt, wr));
            assert_eq!(pseudonym_of.entry(*u).or_insert_with(|| p.clone()), p);
        }
        assert_eq!(pseudonym_of.len(), 7);
        let distinct: std::collections::HashSet<_> = pseudonym_of.values().collect();
        assert_eq!(distinct.len(), 7);
    }

    /// Input that runs a `veil seal` from another handle on the same data directory
    /// when first read: after `ingest_stream` built its door, before anything commits.
    struct SealFirst {
        dir: std::path::PathBuf,
        data: std::io::Cursor<Vec<u8>>,
        sealed: bool,
    }

    impl std::io::Read for SealFirst {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if !std::mem::replace(&mut self.sealed, true) {
                let policy =
                    veil_policy::load_str(POLICY, "p.yaml", chrono::Utc::now().date_naive())
                        .unwrap()
                        .0;
                let mut other =
                    SqliteStore::open(&self.dir, &self.dir.with_file_name("vault")).unwrap();
                let keys = other.key_ring().unwrap();
                let now = chrono::Utc::now().timestamp();
                let o = other.seal(&policy, &keys, now, "other").unwrap();
                assert!(!o.windows.is_empty(), "the old day had data to seal");
            }
            std::io::Read::read(&mut self.data, buf)
        }
    }

    /// `veil ingest` racing a seal: the event the seal overtook is reported at its line
    /// as `late` and counted under its reason, not as accepted.
    #[test]
    fn an_event_a_seal_overtook_is_reported_late_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let now = chrono::Utc::now().timestamp();
        let mut store = SqliteStore::init(
            &dir.path().join("data"),
            &dir.path().join("vault"),
            now - 30 * 86_400,
            "test",
        )
        .unwrap();
        let stamp = |t: i64| {
            chrono::DateTime::from_timestamp(t, 0)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        };
        let event = |id: &str, t: i64, region: &str| {
            format!(
                r#"{{"event":"t.event","time":"{}","id":"{id}","attrs":{{"user":"u-{id}","region":"{region}"}}}}"#,
                stamp(t)
            )
        };
        let old = now - 3 * 86_400;
        // The old day holds an event, so the seal has a window to seal.
        let first = Lines {
            data: std::io::Cursor::new(format!("{}\n", event("a", old, "eu")).into_bytes()),
            fail: false,
        };
        assert_eq!(run(&mut store, first).unwrap().accepted, 1);
        let lines = [
            event("b", now, "eu"),
            String::new(),
            event("c", old + 60, "eu"), // line 3: late once the seal ran
            event("d", now, "asia"),    // line 4: refused by the door
            event("e", now - 60, "us"),
        ];
        let input = SealFirst {
            dir: dir.path().join("data"),
            data: std::io::Cursor::new(format!("{}\n", lines.join("\n")).into_bytes()),
            sealed: false,
        };
        let policy = veil_policy::load_str(POLICY, "p.yaml", chrono::Utc::now().date_naive())
            .unwrap()
            .0;
        let keys = store.key_ring().unwrap();
        let source = Source {
            name: "test".into(),
            collections: None,
            consent: None,
        };
        let mut seen = Vec::new();
        let o = ingest_stream(
            &mut store,
            &policy,
            &keys,
            Limits::default(),
            &source,
            &mut std::io::BufReader::new(input),
            now,
            &mut |(line, r)| seen.push((*line, r.reason().code())),
        )
        .unwrap();
        assert_eq!(seen, vec![(4, "value_not_allowed"), (3, "late")]);
        assert_eq!(o.accepted, 2, "{o:?}");
        assert_eq!(o.rejected.get("late"), Some(&1), "{o:?}");
        assert_eq!(o.late, vec![3]);
        assert_eq!(staged(&store), 3, "a, b and e; not the late c");
    }

    /// Late positions among a request's accepted events become request indexes, merged
    /// in order with the door's rejections.
    #[test]
    fn late_positions_become_request_indexes() {
        let r = |i: usize| (i, Rejection::late(None));
        let idx = |v: &[(usize, Rejection)]| v.iter().map(|(i, _)| *i).collect::<Vec<_>>();
        // Events 0..6; the door refused 1 and 4; accepted are 0, 2, 3, 5.
        let mut rejected = vec![r(1), r(4)];
        merge_late(&mut rejected, &[3, 0]);
        assert_eq!(idx(&rejected), vec![0, 1, 4, 5]);
        let mut rejected = vec![r(0), r(1)];
        merge_late(&mut rejected, &[1]);
        assert_eq!(idx(&rejected), vec![0, 1, 3]);
        let mut rejected = vec![r(2)];
        merge_late(&mut rejected, &[]);
        assert_eq!(idx(&rejected), vec![2]);
    }

    #[test]
    fn bounded_reader_splits_lines_and_caps_long_ones() {
        let data = format!("a\n{}\nlast", "x".repeat(100));
        let mut r = std::io::BufReader::with_capacity(7, data.as_bytes());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while read_line_bounded(&mut r, &mut buf, 10).unwrap().is_some() {
            got.push(String::from_utf8(buf.clone()).unwrap());
        }
        assert_eq!(
            got,
            vec!["a".to_string(), "x".repeat(11), "last".to_string()]
        );
    }
}
