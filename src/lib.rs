//! The clinic suite's shared library: what the `clinic` binary and the four processors in
//! `processors/` stand on.
//!
//! - [`cdc`]: change events from the MongoDB source connector and Debezium, in every form the
//!   processors accept, decoded to one typed event (and encoded, for tests and the demo);
//! - [`streams`]: the Kafka Streams-style core: processor API, stores, record handling with
//!   dead-lettering, the registry codec and the in-process test driver (the Kafka runner is not
//!   built yet, see `docs/streams.md`);
//! - [`endpoints`], [`telemetry`]: where the services are, and logging;
//! - [`smoke`]: an end-to-end check of the chain the processors rely on (`clinic smoke`).
//!
//! The CRUD API and the operators' commands join it as their issues land (see `README.md`).

pub mod api;
pub mod cdc;
pub mod endpoints;
pub mod ops;
pub mod scenario;
pub mod settings;
pub mod shutdown;
pub mod smoke;
pub mod streams;
pub mod telemetry;
pub mod testkit;
