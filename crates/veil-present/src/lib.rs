//! The dashboard's pages (spec §5, `GET /` of `veil serve`): HTML rendered on the server
//! from templates the compiler checks (askama, escaping by default), charts as inline SVG
//! from [`chart`], one stylesheet, no script.
//!
//! Invariant: a page shows numbers only from a [`veil_release::ReleaseDoc`] (a stored
//! release) and facts the gateway hands over (posture, audit entries, grants); this crate
//! reads no store, so it cannot show what was not released. There is no per-person view:
//! no input here carries a person.

#![forbid(unsafe_code)]

pub mod chart;
pub mod fixture;
mod pages;

pub use pages::*;

/// The one stylesheet, served at `/static/veil.css`.
pub const STYLESHEET: &str = include_str!("../static/veil.css");
