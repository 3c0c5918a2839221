//! The API tests whose answers come from the store, compiled a second time
//! and run on PostgreSQL: the same test bodies, with every `TestServer` on a
//! fresh database of the test process's PostgreSQL server
//! (tests/common/postgres.rs). `cargo test --test api postgres::` runs only
//! these.

/// This crate's test helpers, with `TestServer` starting on PostgreSQL.
mod common {
    pub use crate::common::on_postgres::TestServer;
    pub use crate::common::*;
}

// Loading each file a second time is the point: one test body, two stores.
#[allow(clippy::duplicate_mod)]
#[path = "lifecycle.rs"]
mod lifecycle;
#[allow(clippy::duplicate_mod)]
#[path = "pagination.rs"]
mod pagination;
#[allow(clippy::duplicate_mod)]
#[path = "prebuilds.rs"]
mod prebuilds;
#[allow(clippy::duplicate_mod)]
#[path = "restart.rs"]
mod restart;
#[allow(clippy::duplicate_mod)]
#[path = "warm_pools.rs"]
mod warm_pools;
