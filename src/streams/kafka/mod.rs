//! The Kafka plumbing every loop of the runtime shares (the runner, the global tables' thread,
//! the effect stage): settings ([`StreamsSettings`]), health and outages ([`Health`],
//! [`Outages`]), the admin endpoint ([`admin`]), the clients' context ([`Client`]), producing
//! ([`produce`]) and reading topics whole ([`read`]).
//!
//! A loop holds one [`Kafka`] handle: the settings, the process's health and its shutdown flag.
//! Through it, it names topics and groups (with the deployment's prefix), calls the broker
//! until it answers ([`Kafka::broker`]), checks its topics, and creates its consumers and
//! producers, so no loop keeps a copy of that setup.

pub mod admin;
pub mod client;
mod handle;
pub mod health;
pub mod produce;
pub mod read;
mod retry;
pub mod settings;

pub use client::{Client, Quiet, Rebalancing};
pub use handle::Kafka;
pub use health::{Dependency, Health, Outages};
pub use produce::{DeliveryCounter, Producer, flush, send};
pub use read::{ApplyError, ReadError, read_partition, read_partitions, read_partitions_from};
pub use settings::{Guarantee, StreamsSettings};
