//! The ingest edge of Veil: where events enter. [`ingest`] is the one ingest path (the CLI,
//! the benchmarks and the server all use it); [`server`] is `veil serve`, the HTTP and
//! OTLP/HTTP gateway with its principals, limits and read endpoints.
//!
//! Invariant: nothing here interprets an event's values. Bodies are decoded into envelopes
//! and handed to the door; only the door's output reaches the store, through one writer.

pub mod ingest;
pub mod server;
