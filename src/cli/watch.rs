//! `create --watch`: polls the prebuild until it ends. On a terminal the
//! progress is one live spinner line (phase, elapsed time, snapshot
//! percentage); elsewhere (a pipe, CI logs) one line per phase change, so
//! logs stay readable. Progress goes to stderr: stdout has only the final
//! prebuild, so `-o json --watch | jq` works.

use super::client::{get, Client, Result};
use super::output::{prebuild_phase, prebuild_phase_name, print_prebuild};
use indicatif::{ProgressBar, ProgressStyle};
use prebuildd::proto::gitpod::v1::{Prebuild, PrebuildPhase};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(250);
/// How long the server may be unreachable (a restart, a blip) before the
/// watch gives up: the prebuild goes on without us either way.
const PATIENCE: Duration = Duration::from_secs(60);

/// Follows `prebuild` to its end; success only for COMPLETED.
pub async fn follow(client: &mut Client, mut prebuild: Prebuild) -> Result<ExitCode> {
    let started = Instant::now();
    let spinner = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    let mut last = None;
    loop {
        let phase = prebuild_phase(&prebuild);
        let line = progress_line(&prebuild, started.elapsed());
        match &spinner {
            Some(bar) => bar.set_message(line),
            None if last != Some(phase) => eprintln!("{line}"),
            None => {}
        }
        last = Some(phase);
        // Final, or being deleted: the prebuild will not run any more.
        if phase.has_ended() {
            break;
        }
        tokio::time::sleep(POLL).await;
        let mut unreachable_since: Option<Instant> = None;
        prebuild = loop {
            match get(client, &prebuild.id).await {
                Ok(fresh) => break fresh,
                Err(error) if error.code == "unavailable" => {
                    let first = unreachable_since.is_none();
                    if unreachable_since.get_or_insert_with(Instant::now).elapsed() > PATIENCE {
                        return Err(error);
                    }
                    let note = format!("{} (server unreachable, retrying: {})", progress_line(&prebuild, started.elapsed()), error.message);
                    match &spinner {
                        Some(bar) => bar.set_message(note),
                        // Once per outage in a log.
                        None if first => eprintln!("{note}"),
                        None => {}
                    }
                    tokio::time::sleep(POLL).await;
                }
                Err(error) => return Err(error),
            }
        };
    }
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    let details = super::catalog::Details::fetch(client, std::slice::from_ref(&prebuild.id)).await;
    print_prebuild(client.format, &prebuild, &details);
    let phase = prebuild_phase(&prebuild);
    if phase == PrebuildPhase::Completed {
        return Ok(ExitCode::SUCCESS);
    }
    let status = prebuild.status.unwrap_or_default();
    let reason = if status.failure_message.is_empty() { String::new() } else { format!(": {}", status.failure_message) };
    eprintln!("prebuild {} {}{reason}", prebuild.id, prebuild_phase_name(phase).to_ascii_lowercase());
    Ok(ExitCode::FAILURE)
}

/// `RUNNING  12s` or `SNAPSHOTTING  40s  snapshot 35%`.
fn progress_line(prebuild: &Prebuild, elapsed: Duration) -> String {
    let phase = prebuild_phase(prebuild);
    let mut line = format!("{} {}  {}s", prebuild.id, prebuild_phase_name(phase), elapsed.as_secs());
    let percent = prebuild.status.as_ref().map_or(0, |s| s.snapshot_completion_percentage);
    if phase == PrebuildPhase::Snapshotting || percent > 0 {
        line.push_str(&format!("  snapshot {percent}%"));
    }
    line
}
