//! Robustness tests: prebuildd killed with SIGKILL under write load,
//! stopped with SIGTERM under load, reloaded with SIGHUP, fed bad input
//! over every protocol, held to its deadlines and header timeout, and run
//! as replicas on PostgreSQL with the leader killed. One binary, a module
//! per area; the process-level tests run the real `prebuildd` executable as
//! a child.

// The deprecated `desired_size` fields are part of the API under test.
#![allow(deprecated)]

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod crash;
mod deadlines;
mod process;
mod reload;
mod replicas;
mod shutdown;
