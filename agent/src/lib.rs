//! flotilla-agent: one pass per timer tick (see DESIGN.md, "The agent").
#![warn(missing_docs)]

pub mod spool;
