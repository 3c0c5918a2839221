//! Integration tests of the API through real sockets and real clients.
//! One binary (one link) with a module per area.

// The deprecated `desired_size` fields are part of the API under test.
#![allow(deprecated)]

#[path = "../common/mod.rs"]
mod common;

mod auth_and_tenancy;
mod bad_input;
mod claims;
mod connect;
mod fuzz_inputs;
mod grpc_surface;
mod incremental;
mod interop;
mod lifecycle;
mod limits;
mod local_runner;
mod metrics;
mod pagination;
mod postgres;
mod prebuilds;
mod reference_examples;
mod replicas;
mod restart;
mod triggers;
mod warm_pools;
mod wire_compat;
