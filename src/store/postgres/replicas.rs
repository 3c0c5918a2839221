//! What replicas sharing one database coordinate through it, besides the
//! resources: the token secret, the reconciler's lease, and wake-ups
//! (NOTIFY on writes, LISTEN on a dedicated connection).
//!
//! Everything but LISTEN is a statement or a transaction on a pooled
//! connection and holds nothing across transactions, so it works unchanged
//! behind a transaction-mode pooler such as PgBouncer. LISTEN needs a session of its
//! own: behind such a pooler it receives nothing, and the reconciler's
//! interval is what picks up other replicas' writes.

use super::{describe, PostgresStore};
use crate::error::{Error, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};

/// The channel writes are announced on.
const CHANNEL: &str = "prebuildd_changes";
/// How long the listener waits before connecting again after losing its
/// connection.
const RELISTEN_DELAY: Duration = Duration::from_secs(1);

impl PostgresStore {
    /// The secret that signs tokens, shared by every process on this
    /// database: the first to ask creates it; everyone reads the row back.
    pub async fn shared_token_secret(&self) -> Result<[u8; 32]> {
        let client = self.client().await?;
        let candidate: [u8; 32] = rand::random();
        client
            .execute("INSERT INTO token_secret (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING", &[&candidate.as_slice()])
            .await?;
        let row = client.query_one("SELECT secret FROM token_secret WHERE id = 1", &[]).await?;
        let secret: &[u8] = row.try_get(0)?;
        secret.try_into().map_err(|_| Error::Internal("the token_secret row does not hold a 32-byte secret".into()))
    }

    /// Takes or renews the reconciler's lease for `holder` until the
    /// database's clock reads `lease` later, if it is free, expired, or
    /// already `holder`'s. Returns the term held, or `None` when another
    /// holder's lease still runs. The term changes whenever the lease
    /// changes hands, or `holder` comes back after its lease ran out.
    ///
    /// A renewal changes only `expires_at`, which the fenced writes' `KEY
    /// SHARE` locks do not block. A takeover locks the row `FOR UPDATE`
    /// before raising the term, so it waits for the old term's writes in
    /// flight (see [`super::fence`]); it is tried only once the lease has
    /// run out, so followers asking every second never queue behind the
    /// leader's writes.
    pub async fn acquire_lease(&self, holder: &str, lease: Duration) -> Result<Option<i64>> {
        let seconds = lease.as_secs_f64();
        let mut client = self.client().await?;
        let renew = client
            .prepare_cached(
                "UPDATE reconciler_lease SET expires_at = statement_timestamp() + make_interval(secs => $2)
                 WHERE id = 1 AND holder = $1 AND expires_at > statement_timestamp()
                 RETURNING term",
            )
            .await?;
        if let Some(row) = client.query_opt(&renew, &[&holder, &seconds]).await? {
            return Ok(Some(row.try_get(0)?));
        }
        let running = client.prepare_cached("SELECT expires_at > statement_timestamp() FROM reconciler_lease WHERE id = 1").await?;
        match client.query_opt(&running, &[]).await? {
            Some(row) if row.try_get::<_, bool>(0)? => return Ok(None),
            Some(_) => {}
            None => {
                // The first lease on this database. Whoever loses the race
                // to insert it finds a running lease.
                let first = client
                    .prepare_cached(
                        "INSERT INTO reconciler_lease (id, holder, term, expires_at)
                         VALUES (1, $1, 1, statement_timestamp() + make_interval(secs => $2))
                         ON CONFLICT (id) DO NOTHING RETURNING term",
                    )
                    .await?;
                return Ok(client.query_opt(&first, &[&holder, &seconds]).await?.map(|row| row.try_get(0)).transpose()?);
            }
        }
        let tx = client.transaction().await?;
        // Waits for the old term's writes; after the wait the row is read
        // again, so of several replicas taking over at once one wins.
        let lock =
            tx.prepare_cached("SELECT 1 FROM reconciler_lease WHERE id = 1 AND expires_at <= statement_timestamp() FOR UPDATE").await?;
        if tx.query_opt(&lock, &[]).await?.is_none() {
            return Ok(None);
        }
        let take = tx
            .prepare_cached(
                "UPDATE reconciler_lease SET holder = $1, term = term + 1, expires_at = statement_timestamp() + make_interval(secs => $2)
                 WHERE id = 1 RETURNING term",
            )
            .await?;
        let term: i64 = tx.query_one(&take, &[&holder, &seconds]).await?.try_get(0)?;
        tx.commit().await?;
        Ok(Some(term))
    }

    /// Gives the lease up (a graceful stop), so another replica takes it at
    /// its next attempt instead of waiting for it to run out.
    pub async fn release_lease(&self, holder: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute("UPDATE reconciler_lease SET expires_at = statement_timestamp() - interval '1 second' WHERE holder = $1", &[&holder])
            .await?;
        Ok(())
    }

    /// Wakes the reconciler of every process listening on this database.
    pub async fn announce_change(&self) -> Result<()> {
        let client = self.client().await?;
        client.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).await?;
        Ok(())
    }

    /// Listens for announced changes on a connection of its own and wakes
    /// `wake` for each, until the returned task is aborted. A lost
    /// connection is made again; `wake` is woken once after each reconnect,
    /// for what may have been announced in between.
    pub fn listen(&self, wake: Arc<Notify>) -> tokio::task::JoinHandle<()> {
        let config = self.url.config().clone();
        let url = self.url.clone();
        tokio::spawn(async move {
            let mut connected_before = false;
            loop {
                match config.connect(NoTls).await {
                    Ok((client, mut connection)) => {
                        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                        let listening = async {
                            use futures::StreamExt;
                            // The connection must be polled for LISTEN to be sent.
                            let listen_sql = format!("LISTEN {CHANNEL}");
                            let listen = client.batch_execute(&listen_sql);
                            tokio::pin!(listen);
                            let mut listened = false;
                            loop {
                                tokio::select! {
                                    result = &mut listen, if !listened => {
                                        result?;
                                        listened = true;
                                        if connected_before {
                                            wake.notify_one();
                                        }
                                        connected_before = true;
                                    }
                                    message = messages.next() => match message {
                                        Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                                        Some(Ok(_)) => {}
                                        Some(Err(error)) => return Err(error),
                                        None => return Ok(()),
                                    }
                                }
                            }
                        };
                        let outcome: std::result::Result<(), tokio_postgres::Error> = listening.await;
                        match outcome {
                            Ok(()) => tracing::warn!(url = %url, "the PostgreSQL listener's connection closed; reconnecting"),
                            Err(error) => {
                                tracing::warn!(url = %url, error = %describe(&error), "the PostgreSQL listener failed; reconnecting")
                            }
                        }
                    }
                    Err(error) => tracing::warn!(url = %url, error = %describe(&error), "cannot connect the PostgreSQL listener"),
                }
                tokio::time::sleep(RELISTEN_DELAY).await;
            }
        })
    }
}

impl PostgresStore {
    /// How much of `source`'s log file of a prebuild is already copied.
    pub async fn copied_log_length(&self, prebuild_id: &str, source: &str) -> Result<u64> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT COALESCE(MAX(source_offset + length(chunk)), 0)::BIGINT FROM prebuild_log_chunks WHERE prebuild_id = $1 AND source = $2",
            )
            .await?;
        let length: i64 = client.query_one(&statement, &[&prebuild_id, &source]).await?.try_get(0)?;
        Ok(length as u64)
    }

    /// Copies a chunk of `source`'s log file of a prebuild, starting at
    /// `offset` in it. A chunk already there, or a prebuild that is gone,
    /// changes nothing.
    pub async fn append_log_chunk(&self, prebuild_id: &str, source: &str, offset: u64, chunk: &[u8]) -> Result<()> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO prebuild_log_chunks (prebuild_id, source, source_offset, chunk)
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM prebuilds WHERE id = $1)
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        client.execute(&statement, &[&prebuild_id, &source, &(offset as i64), &chunk]).await?;
        Ok(())
    }

    /// A prebuild's log chunks after `after_seq`, in the order they were
    /// copied, with their positions (at most `limit`).
    pub async fn log_chunks_after(&self, prebuild_id: &str, after_seq: i64, limit: i64) -> Result<Vec<(i64, Vec<u8>)>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT seq, chunk FROM prebuild_log_chunks WHERE prebuild_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
            .await?;
        let rows = client.query(&statement, &[&prebuild_id, &after_seq, &limit]).await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
    }

    /// Removes a prebuild's copied log (idempotent).
    pub async fn remove_log(&self, prebuild_id: &str) -> Result<()> {
        let client = self.client().await?;
        client.execute("DELETE FROM prebuild_log_chunks WHERE prebuild_id = $1", &[&prebuild_id]).await?;
        Ok(())
    }
}
