//! The notifications processor: its decisions through the test driver ([`driver`]), the SMTP
//! sender against Mailpit ([`smtp`]), and the whole binary on the local stack ([`stack`]).

mod driver;
mod mailpit;
mod smtp;
mod stack;
