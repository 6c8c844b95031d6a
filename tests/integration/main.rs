//! Integration tests of the `clinic` crate.
//!
//! Tests that talk to services need the local stack running (`scripts/stack up`); endpoints come
//! from the environment with the stack's defaults (`scripts/stack env`). A missing service fails
//! the test with the service's name and how to start it; nothing is skipped. The example
//! processor's tests run through the in-process test driver and need no service.

mod api;
mod codec;
mod connectors;
mod dlq;
mod effects;
mod emulator;
mod example_processor;
mod gate;
mod global;
mod helm;
mod helpers;
mod reconcile;
mod runner;
mod runner_avro;
mod schemas;
mod sink_shapes;
mod smoke;
mod status;
mod topics;
mod topology;
