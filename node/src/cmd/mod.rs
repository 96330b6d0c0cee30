//! Subcommands that work on a model directly, without a running node.

pub mod generate;
pub mod model;
pub mod run;
pub mod ton;
