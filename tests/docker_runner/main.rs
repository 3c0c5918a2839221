//! The docker runner against a real Docker daemon, through the public API:
//! prebuilds in dev containers, warm pools of containers, restarts, cancel,
//! failure and clean-up, and what a prebuild can see. One binary with a
//! module per area; every test has its own runner ID and root, so they run
//! side by side.

#[path = "../common/mod.rs"]
mod common;

mod builder;
mod collection;
mod compose;
mod credentials;
mod failures;
mod features;
mod fleet;
mod harness;
mod incremental;
mod isolation;
mod lifecycle;
mod network;
mod policy;
mod pools;
mod registry;
mod registry_push;
mod remote;
mod replicas;
mod second_daemon;
