//! Shared test helpers: real binaries, a fleet repo made with the publisher,
//! simulated hosts, and a loopback HTTP server with attack knobs.
#![allow(dead_code)]

pub mod bins;
pub mod fleet;
pub mod host;
pub mod http;
pub mod proxy;
