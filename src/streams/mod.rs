//! The Kafka Streams-style core every processor runs on (DESIGN.md section 3).
//!
//! A processor is a pure function of (input record, its state) → output records: it implements
//! [`Processor`], declares its inputs, outputs and stores in a [`Topology`], and gets a
//! [`Context`] to read and write its [`store`]s and emit [`OutputRecord`]s. It does no I/O.
//!
//! [`task::Task`] is the engine around one processor: it decodes each input by its topic's
//! declared format, materializes table inputs into their stores, runs the processor with its
//! writes buffered, and turns the result into one [`task::Outcome`]: the outputs, the store
//! changelog writes, or a dead-letter record when the input was poison. Nothing of a poison
//! record's partial work survives. Collection-level change events (`drop`, `rename`, …) are
//! counted and skipped before any of that; [`crate::cdc::next_document`] is the one fold of a
//! change into its document, for tables and processors alike. The [`driver::TestDriver`] runs a
//! `Task` in-process without a broker; [`global::GlobalTables`] keeps the global tables every
//! instance reads whole (read by every task, changes announced to each); the [`runner`] drives the same `Task` on Kafka
//! (transactions, rebalancing, restore, outages, admin endpoint), and [`app::run`] is the `main`
//! of every processor binary.

pub mod app;
pub mod codec;
pub mod disk;
pub mod dlq;
pub mod driver;
pub mod effect;
pub mod global;
pub mod kafka;
pub mod metrics;
pub mod processor;
pub mod projection;
pub mod record;
pub mod reroute;
pub mod runner;
pub mod store;
pub mod stored;
pub mod supervise;
pub mod task;
pub mod topology;

pub use processor::{
    Context, Input, OutValue, OutputRecord, Payload, ProcessError, Processor, sink_document,
    sink_key,
};
pub use topology::{IndexKeys, InputFormat, InputKind, StoreIndex, StoreKind, Topology};
