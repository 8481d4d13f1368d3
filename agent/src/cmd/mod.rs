//! One module per subcommand: `Args` (doc comments are the help) and `run`.

pub mod install;
pub mod rollback;
pub mod run;
pub mod self_test;
pub mod status;
pub mod version;
