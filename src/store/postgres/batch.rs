//! Group commit of CreatePrebuild inserts.
//!
//! Every insert waiting when a connection becomes free goes into one
//! multi-row `INSERT ... SELECT FROM unnest(...)`, a single statement and so
//! a single transaction and commit; each caller is answered after that
//! commit, so an acknowledged create is as durable as before. A few groups
//! are written at once (on separate pooled connections), so a slow commit
//! does not stall the others, and a group never waits for more callers: under
//! light load a group is one row, written as soon as it arrives.
//!
//! `ON CONFLICT (id) DO NOTHING RETURNING id` tells which rows went in: a
//! caller whose ID is not returned gets `already_exists`, and the others are
//! unaffected. When the database goes away the error is every caller's in
//! the group, none of whose rows was committed; when the server refuses the
//! statement for what one row holds, each row is written again on its own,
//! so a bad row fails only its own caller.

use super::PostgresStore;
use crate::error::{Error, Result};
use crate::proto::gitpod::v1::Prebuild;
use crate::store::columns::prebuild_columns;
use prost::Message;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Groups written at once; the rest of the pool serves reads and other writes.
const GROUPS_IN_FLIGHT: usize = 4;
/// The most rows in one group (bounds the statement's size).
const MAX_GROUP: usize = 256;
/// Callers that may wait for a group before `insert` pushes back.
const QUEUE: usize = 4096;

const INSERT_GROUP: &str = "INSERT INTO prebuilds (id, organization_id, project_id, environment_class_id, phase, triggered_by, creator_id, executor_id, version, body, finished_at)
     SELECT id, organization_id, project_id, environment_class_id, phase, triggered_by, creator_id, executor_id, 1, body, finished_at
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::int4[], $7::text[], $8::text[], $9::bytea[], $10::int8[])
          AS r (id, organization_id, project_id, environment_class_id, phase, triggered_by, creator_id, executor_id, body, finished_at)
     ON CONFLICT (id) DO NOTHING
     RETURNING id";

type Waiting = (Prebuild, oneshot::Sender<Result<()>>);

/// Where inserts queue for their group; clones share the queue.
#[derive(Clone)]
pub(super) struct InsertGroups {
    queue: mpsc::Sender<Waiting>,
}

impl InsertGroups {
    /// Starts the task that forms groups and writes them through `store`
    /// (an unfenced store). It ends when every clone is dropped.
    pub(super) fn start(store: PostgresStore) -> InsertGroups {
        let (queue, mut waiting) = mpsc::channel::<Waiting>(QUEUE);
        let in_flight = Arc::new(Semaphore::new(GROUPS_IN_FLIGHT));
        tokio::spawn(async move {
            loop {
                // A free slot first, then whatever has queued meanwhile.
                let Ok(slot) = in_flight.clone().acquire_owned().await else { return };
                let Some(first) = waiting.recv().await else { return };
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match waiting.try_recv() {
                        Ok(next) => group.push(next),
                        Err(_) => break,
                    }
                }
                let store = store.clone();
                tokio::spawn(async move {
                    write_group(&store, group).await;
                    drop(slot);
                });
            }
        });
        InsertGroups { queue }
    }

    /// Inserts `prebuild` with the next group; returns after its commit.
    pub(super) async fn insert(&self, prebuild: Prebuild) -> Result<()> {
        let (answer, answered) = oneshot::channel();
        let stopped = || Error::Unavailable("the store is shutting down; retry the request".into());
        self.queue.send((prebuild, answer)).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

async fn write_group(store: &PostgresStore, group: Vec<Waiting>) {
    // One row per ID: a second caller with the same ID in the group already
    // exists, as it would one group later.
    let mut ids = HashSet::new();
    let (mut rows, duplicates): (Vec<Waiting>, Vec<Waiting>) = group.into_iter().partition(|(p, _)| ids.insert(p.id.clone()));
    // Rows in ID order: two groups in flight (here or on another replica)
    // that hold the same IDs then wait on each other's uncommitted rows in
    // one order, never in a cycle (a deadlock the server would break by
    // failing one group).
    rows.sort_unstable_by(|a, b| a.0.id.cmp(&b.0.id));
    for (prebuild, answer) in duplicates {
        let _ = answer.send(Err(already_exists(&prebuild)));
    }
    match insert_rows(store, &rows).await {
        Ok(inserted) => answer_all(rows, &inserted),
        // Something in one row the server refused (not the database going
        // away): each row again on its own, so it fails only its caller.
        Err(Error::Internal(_)) if rows.len() > 1 => {
            for row in rows {
                let alone = [row];
                match insert_rows(store, &alone).await {
                    Ok(inserted) => answer_all(alone, &inserted),
                    Err(error) => answer_all_with(alone, &error),
                }
            }
        }
        Err(error) => answer_all_with(rows, &error),
    }
}

fn answer_all(rows: impl IntoIterator<Item = Waiting>, inserted: &HashSet<String>) {
    for (prebuild, answer) in rows {
        let _ = answer.send(if inserted.contains(&prebuild.id) { Ok(()) } else { Err(already_exists(&prebuild)) });
    }
}

fn answer_all_with(rows: impl IntoIterator<Item = Waiting>, error: &Error) {
    for (_, answer) in rows {
        let _ = answer.send(Err(error.clone()));
    }
}

/// The group's statement; returns the IDs it inserted.
async fn insert_rows(store: &PostgresStore, rows: &[Waiting]) -> Result<HashSet<String>> {
    let mut columns = Columns::default();
    for (prebuild, _) in rows {
        let c = prebuild_columns(prebuild);
        columns.id.push(prebuild.id.as_str());
        columns.organization_id.push(c.organization_id);
        columns.project_id.push(c.project_id);
        columns.environment_class_id.push(c.environment_class_id);
        columns.phase.push(c.phase);
        columns.triggered_by.push(c.triggered_by);
        columns.creator_id.push(c.creator_id);
        columns.executor_id.push(c.executor_id);
        columns.body.push(prebuild.encode_to_vec());
        columns.finished_at.push(c.finished_at);
    }
    let client = store.client().await?;
    let statement = client.prepare_cached(INSERT_GROUP).await?;
    let returned = client
        .query(
            &statement,
            &[
                &columns.id,
                &columns.organization_id,
                &columns.project_id,
                &columns.environment_class_id,
                &columns.phase,
                &columns.triggered_by,
                &columns.creator_id,
                &columns.executor_id,
                &columns.body,
                &columns.finished_at,
            ],
        )
        .await?;
    returned.iter().map(|row| Ok(row.try_get::<_, String>(0)?)).collect()
}

/// The group's rows as the statement's column arrays.
#[derive(Default)]
struct Columns<'a> {
    id: Vec<&'a str>,
    organization_id: Vec<&'a str>,
    project_id: Vec<&'a str>,
    environment_class_id: Vec<&'a str>,
    phase: Vec<i32>,
    triggered_by: Vec<i32>,
    creator_id: Vec<&'a str>,
    executor_id: Vec<&'a str>,
    body: Vec<Vec<u8>>,
    finished_at: Vec<Option<i64>>,
}

fn already_exists(prebuild: &Prebuild) -> Error {
    Error::AlreadyExists(format!("prebuild {} already exists", prebuild.id))
}
