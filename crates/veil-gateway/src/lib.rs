//! The network edge of Veil: [`server`] is `veil serve`, the HTTP and OTLP/HTTP gateway
//! with its principals, limits and read endpoints, over the one ingest path that the CLI
//! and the collectors share ([`veil_ingest`], re-exported as [`ingest`]).
//!
//! Invariant: nothing here interprets an event's values. Bodies are decoded into envelopes
//! and handed to the door; only the door's output reaches the store, through one writer.

/// The one ingest path, re-exported for callers that named it here.
pub use veil_ingest as ingest;
pub mod server;
