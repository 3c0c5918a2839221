//! Robustness tests: prebuildd killed with SIGKILL under write load,
//! stopped with SIGTERM under load, fed bad input over every protocol, and
//! held to its deadlines and header timeout. One binary, a module per area;
//! the process-level tests run the real `prebuildd` executable as a child.

// The deprecated `desired_size` fields are part of the API under test.
#![allow(deprecated)]

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod crash;
mod deadlines;
mod process;
mod shutdown;
