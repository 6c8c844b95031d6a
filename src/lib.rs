//! The clinic suite's shared library: what the `clinic` binary and the four processors in
//! `processors/` stand on.
//!
//! - [`cdc`]: change events from the MongoDB source connector and Debezium, in every form the
//!   processors accept, decoded to one typed event (and encoded, for tests and the demo);
//! - [`streams`]: the Kafka Streams-style runtime: processor API, stores, record handling with
//!   dead-lettering, the registry codec, the in-process test driver, the exactly-once Kafka
//!   runner and the `main` every processor binary shares (see `docs/streams.md`);
//! - [`documents`]: readers of the clinic documents' fields that several processors read;
//!   [`gatekeeper`]: the permission rows gatekeeper reads, as the permissions processor and
//!   `clinic reconcile permissions` compute them;
//!   [`events`]: the identity service's user events; [`email`]: the email requests processors
//!   send the notifications processor;
//! - [`endpoints`], [`settings`], [`telemetry`], [`shutdown`], [`sync`]: where the services are,
//!   typed settings, logging and metrics, the shutdown signal, locks;
//! - [`smoke`]: an end-to-end check of the chain the processors rely on (`clinic smoke`).
//!
//! - [`api`]: the clinic.v1 CRUD API; [`ops`]: the operators' `topics`/`connectors` commands;
//!   [`scenario`], [`testkit`]: the demo's story and what the tests share; [`emulator`]: the
//!   source connector's development stand-in for databases without change streams.

/// Every binary on the platform (the processors, `clinic`, tests and benches) allocates through
/// mimalloc: the runtime allocates per record (decoded documents, keys, store entries), and in
/// the permissions processor's profile glibc's malloc and free took about a third of the CPU,
/// and glibc kept the memory freed (`docs/processors.md`, "Throughput and memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "api")]
pub mod api;
pub mod cdc;
pub mod documents;
pub mod email;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod endpoints;
pub mod events;
pub mod gatekeeper;
#[cfg(feature = "ops")]
pub mod ops;
#[cfg(feature = "scenario")]
pub mod scenario;
pub mod settings;
pub mod shutdown;
#[cfg(feature = "smoke")]
pub mod smoke;
pub mod streams;
pub mod sync;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
