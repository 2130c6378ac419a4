//! The store's one owner. SQLite has one writer at a time and the audit head must advance
//! in order, so every store call of the gateway runs on this thread, in arrival order.
//!
//! Ingest jobs queued together are committed in one transaction (group commit): a 2xx is
//! sent only after that commit returned, and throughput does not depend on one fsync per
//! request. Other jobs (reads, releases, audit entries, maintenance) run between commits.

use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use veil_pipeline::{AcceptedBatch, KeyRing, Rejection};
use veil_policy::Policy;
use veil_store::{IngestBatch, IngestOutcome, Store, StoreError};

/// What a handler needs to run the door: the policy, the keys and the seal boundaries,
/// replaced as a whole after a key rotation or a seal.
pub struct Engine {
    pub policy: Arc<Policy>,
    pub keys: Arc<KeyRing>,
    pub sealed_before: Vec<i64>,
}

/// The current engine, shared by handlers and the writer.
pub type SharedEngine = Arc<RwLock<Arc<Engine>>>;

/// A closure run on the writer thread with the store and the current engine.
pub type StoreFn = Box<dyn FnOnce(&mut dyn Store, &SharedEngine) + Send>;

/// One unit of work for the writer.
pub enum Job {
    /// Admitted events of one request, committed with whatever else is queued.
    Ingest {
        source: String,
        received_at: i64,
        accepted: AcceptedBatch,
        rejected: Vec<Rejection>,
        /// Queue capacity held until the commit; released when the job is dropped.
        permit: Option<OwnedSemaphorePermit>,
        reply: oneshot::Sender<Result<IngestOutcome, String>>,
    },
    /// Anything else that touches the store.
    Run(StoreFn),
}

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

/// The writer has stopped (shutdown, or the store failed).
#[derive(Debug, thiserror::Error)]
#[error("the store writer is not running")]
pub struct WriterGone;

impl Writer {
    /// Starts the writer thread. `max_events` bounds one group commit.
    pub fn start(
        store: Box<dyn Store + Send>,
        engine: SharedEngine,
        capacity: usize,
        max_events: usize,
    ) -> (Writer, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let h = std::thread::Builder::new()
            .name("veil-writer".into())
            .spawn(move || run(store, engine, rx, max_events))
            .expect("spawn the writer thread");
        (Writer { tx }, h)
    }

    /// Queues an ingest job, waiting for room (the event-count semaphore in front of
    /// this bounds what can wait here).
    pub async fn ingest(&self, job: Job) -> Result<(), WriterGone> {
        self.tx.send(job).await.map_err(|_| WriterGone)
    }

    /// Runs `f` on the writer thread and returns its result.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Store, &SharedEngine) -> T + Send + 'static,
    ) -> Result<T, WriterGone> {
        let (tx, rx) = oneshot::channel();
        let job = Job::Run(Box::new(move |s, e| {
            let _ = tx.send(f(s, e));
        }));
        self.tx.send(job).await.map_err(|_| WriterGone)?;
        rx.await.map_err(|_| WriterGone)
    }
}

fn run(
    mut store: Box<dyn Store + Send>,
    engine: SharedEngine,
    mut rx: mpsc::Receiver<Job>,
    max_events: usize,
) {
    let mut pending: Option<Job> = None;
    loop {
        let job = match pending.take() {
            Some(j) => j,
            None => match rx.blocking_recv() {
                Some(j) => j,
                None => return, // every sender dropped: shutdown after the queue drained
            },
        };
        match job {
            Job::Run(f) => f(store.as_mut(), &engine),
            first @ Job::Ingest { .. } => {
                let mut group = vec![first];
                let mut events = count(&group[0]);
                while events < max_events {
                    match rx.try_recv() {
                        Ok(j @ Job::Ingest { .. }) => {
                            events += count(&j);
                            group.push(j);
                        }
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit(store.as_mut(), &engine, group);
            }
        }
    }
}

fn count(j: &Job) -> usize {
    match j {
        Job::Ingest {
            accepted, rejected, ..
        } => accepted.len() + rejected.len(),
        Job::Run(_) => 0,
    }
}

fn commit(store: &mut dyn Store, engine: &SharedEngine, group: Vec<Job>) {
    let eng = engine.read().expect("engine lock").clone();
    let mut replies = Vec::with_capacity(group.len());
    let mut permits = Vec::with_capacity(group.len());
    let mut batches = Vec::with_capacity(group.len());
    let sources: Vec<String> = group
        .iter()
        .map(|j| match j {
            Job::Ingest { source, .. } => source.clone(),
            Job::Run(_) => String::new(),
        })
        .collect();
    for (j, source) in group.into_iter().zip(&sources) {
        if let Job::Ingest {
            received_at,
            accepted,
            rejected,
            permit,
            reply,
            ..
        } = j
        {
            replies.push(reply);
            permits.push(permit);
            batches.push(IngestBatch {
                source,
                received_at,
                accepted,
                rejected,
            });
        }
    }
    let result: Result<Vec<IngestOutcome>, StoreError> =
        store.ingest(&eng.policy, &eng.keys, &batches);
    match result {
        Ok(outs) => {
            for (r, o) in replies.into_iter().zip(outs) {
                let _ = r.send(Ok(o));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "ingest commit failed; the requests get 503");
            for r in replies {
                let _ = r.send(Err("the store could not commit the batch".into()));
            }
        }
    }
    drop(permits);
}
