//! The clinic suite's shared library: what the `clinic` binary and the four processors in
//! `processors/` stand on.
//!
//! Today it holds the pieces every binary needs from the start: where the services are
//! ([`endpoints`]), logging ([`telemetry`]) and an end-to-end check of the chain the processors
//! rely on ([`smoke`]). The streams runtime, the CDC codecs, the CRUD API and the operators'
//! commands join it as their issues land (see `README.md`).

pub mod cdc;
pub mod endpoints;
pub mod smoke;
pub mod streams;
pub mod telemetry;
