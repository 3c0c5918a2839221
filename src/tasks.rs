//! The server's long-lived tasks (the listener, the reconciler, leadership
//! among replicas, the log copier), supervised together.
//!
//! A task that panics must not leave a process that looks healthy but no
//! longer serves or reconciles: the panic is logged with the task's name,
//! the others are told to stop (the same cancellation token as a graceful
//! shutdown), and [`Tasks::wait`] returns the failure, so that the binary
//! exits non-zero. (A panic inside one reconcile step is caught where it
//! happens and only fails that step; see the reconciler.)

use futures::stream::{FuturesUnordered, StreamExt};
use std::future::Future;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A task of the server panicked (or was aborted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {task} task failed: {message}")]
pub struct TaskFailed {
    pub task: &'static str,
    pub message: String,
}

/// Named tasks and the token that stops them.
pub struct Tasks {
    shutdown: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Tasks {
    pub fn new(shutdown: CancellationToken) -> Self {
        Tasks { shutdown, tasks: Vec::new() }
    }

    /// Spawns `task` under `name` (which says what failed, if it does).
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push((name, tokio::spawn(task)));
    }

    /// Waits for every task to end. The first that panics is logged, stops
    /// the others (through the shutdown token) and is returned once they
    /// have ended too.
    pub async fn wait(self) -> Result<(), TaskFailed> {
        let mut running: FuturesUnordered<_> = self.tasks.into_iter().map(|(name, handle)| async move { (name, handle.await) }).collect();
        let mut failure = None;
        while let Some((task, ended)) = running.next().await {
            let Err(error) = ended else { continue };
            let message = if error.is_panic() { panic_message(error.into_panic()) } else { error.to_string() };
            tracing::error!(task, %message, "a task of the server failed; stopping the server");
            self.shutdown.cancel();
            failure.get_or_insert(TaskFailed { task, message });
        }
        failure.map_or(Ok(()), Err)
    }
}

/// What a panic said: its message when it is text.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => text.to_string(),
            Err(_) => "a panic without a message".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_panicking_task_stops_the_others_and_is_reported() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        let stopped = shutdown.clone();
        tasks.spawn("listener", async move { stopped.cancelled().await });
        tasks.spawn("reconciler", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            panic!("the reconciler broke: {}", 42);
        });
        let failure = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await.expect("the others stop");
        assert_eq!(failure, Err(TaskFailed { task: "reconciler", message: "the reconciler broke: 42".into() }));
        assert!(shutdown.is_cancelled());
    }

    #[tokio::test]
    async fn tasks_that_end_after_a_shutdown_are_a_clean_stop() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        for name in ["listener", "reconciler"] {
            let stopped = shutdown.clone();
            tasks.spawn(name, async move { stopped.cancelled().await });
        }
        shutdown.cancel();
        assert_eq!(tasks.wait().await, Ok(()));
    }

    #[test]
    fn panic_messages_are_read_from_either_kind_of_payload() {
        assert_eq!(panic_message(Box::new("static")), "static");
        assert_eq!(panic_message(Box::new(String::from("owned"))), "owned");
        assert_eq!(panic_message(Box::new(7)), "a panic without a message");
    }
}
