//! Veil's door: every event passes here before anything is stored.
//!
//! [`Door::admit`] validates an event against the compiled [`veil_policy::Policy`],
//! scans retained strings for personal data ([`pii`]), pseudonymizes direct identifiers
//! with the epoch's HMAC key ([`KeyRing`]), generalizes and drops what the policy says,
//! and computes the event's metric [`Contribution`]s. It returns an [`Accepted`] event or
//! a [`Rejection`] with a reason code — never an error that quotes a value.

#![forbid(unsafe_code)]

mod door;
pub mod envelope;
pub mod keys;
pub mod normalize;
pub mod pii;
mod reject;
pub mod staging;
pub mod varint;
pub mod window;

pub use door::{
    late_before, Accepted, AcceptedBatch, AcceptedRef, Contribution, Door, Limits, MissingId,
    Source, GROUP_SEP, REDACTED_GROUP,
};
pub use keys::{ContributorId, Epoch, EpochId, EpochKeys, Identifier, KeyRing, Pseudonym, Secret};
pub use reject::{safe_name, Reason, Rejection};
