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
//! record's partial work survives. The [`driver::TestDriver`] runs a `Task` in-process without a
//! broker; the Kafka runner (transactions, rebalancing, admin endpoint) is the next step and will
//! drive the same `Task`.

pub mod codec;
pub mod dlq;
pub mod driver;
pub mod processor;
pub mod runner;
pub mod store;
pub mod task;
pub mod topology;

pub use processor::{
    Context, Input, OutValue, OutputRecord, Payload, ProcessError, Processor, sink_key,
};
pub use topology::{InputFormat, InputKind, Topology};
