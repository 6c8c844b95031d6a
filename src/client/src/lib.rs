//! A typed client of the clinic API, generated at build time from the clinic.v1 contract the
//! repository vendors, for the operations the API implements (`build.rs` says how and what it
//! adapts). `Client::new_with_client(base, http)` with a `reqwest::Client` that sends the
//! caller's token (`Authorization: Bearer …`); every operation is a method named after its
//! `operationId` in snake case (`create_clinic`, `invite_clinician`, …), its bodies and answers
//! in [`types`]. Request bodies use the `…Request` types (the contract's schema without its
//! required fields, which the server fills).
#![allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::restriction,
    clippy::nursery,
    unused_comparisons,
    unused_qualifications,
    reason = "generated code"
)]

include!(concat!(env!("OUT_DIR"), "/client.rs"));

/// The `operationId`s the client has: the contract's operations the API serves.
pub fn operations() -> impl Iterator<Item = &'static str> {
    include_str!("../operations.txt").lines()
}
