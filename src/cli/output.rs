//! How results are printed: aligned columns for people, or exactly the
//! resource's proto3 JSON for scripts, an array for lists: the encoder the
//! Connect layer answers with (pbjson serde, Z-normalized timestamps), so
//! `-o json` prints what a Connect client would receive, on one line.

use super::catalog::{print_source, short_sha, trigger_name, Details};
use super::Format;
use prebuildd::proto::gitpod::v1::{Prebuild, PrebuildPhase, WarmPool, WarmPoolPhase};
use prebuildd::proto::prebuildd::v1::WarmPoolInstance;
use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};

/// Writes one line to stdout. A closed stdout (`| head`) is not an error
/// worth a panic: the rest of the output is dropped.
pub fn line(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Prints any message (or list of them) as proto3 JSON.
pub fn print_json<T: Serialize>(value: &T) {
    match prebuildd::transport::json::to_vec(value) {
        Ok(bytes) => line(&String::from_utf8_lossy(&bytes)),
        // The generated impls do not fail on well-formed messages.
        Err(error) => eprintln!("internal: cannot encode JSON: {error}"),
    }
}

/// Columns padded to their widest cell, two spaces apart.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let row_line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        line(padded.join("  ").trim_end());
    };
    row_line(headers.to_vec());
    for row in rows {
        row_line(row.iter().map(String::as_str).collect());
    }
}

pub const PREBUILD_HEADERS: &[&str] = &["ID", "PROJECT", "CLASS", "BRANCH", "COMMIT", "PHASE", "TRIGGER", "AGE"];

/// One prebuild as a row under [`PREBUILD_HEADERS`]: project and class by
/// name, and its source, when `details` has them.
pub fn prebuild_row(prebuild: &Prebuild, details: &Details) -> Vec<String> {
    let metadata = prebuild.metadata.clone().unwrap_or_default();
    let source = details.source(&prebuild.id);
    let or_dash = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
    let trigger = match source {
        Some(source) => trigger_name(source),
        None => metadata.triggered_by().as_str_name().trim_start_matches("PREBUILD_TRIGGER_").to_ascii_lowercase(),
    };
    vec![
        prebuild.id.clone(),
        details.project(&metadata.project_id),
        details.class(&metadata.environment_class_id),
        or_dash(source.map_or("", |s| s.branch.as_str())),
        or_dash(short_sha(source.map_or("", |s| s.commit_sha.as_str()))),
        prebuild_phase_name(prebuild_phase(prebuild)).to_string(),
        trigger,
        age(metadata.created_at.as_ref()),
    ]
}

pub const WARM_POOL_HEADERS: &[&str] = &["ID", "PROJECT", "CLASS", "MIN/MAX/DESIRED", "RUNNING/STOPPED", "SNAPSHOT", "PHASE"];

/// One warm pool as a row under [`WARM_POOL_HEADERS`].
pub fn warm_pool_row(pool: &WarmPool) -> Vec<String> {
    let metadata = pool.metadata.clone().unwrap_or_default();
    let spec = pool.spec.clone().unwrap_or_default();
    let status = pool.status.clone().unwrap_or_default();
    let size = |value: Option<i32>| value.map_or("-".to_string(), |v| v.to_string());
    vec![
        pool.id.clone(),
        metadata.project_id,
        metadata.environment_class_id,
        format!("{}/{}/{}", size(spec.min_size), size(spec.max_size), status.desired_size),
        format!("{}/{}", status.running_instances, status.stopped_instances),
        spec.snapshot_id.unwrap_or_else(|| "-".into()),
        warm_pool_phase_name(status.phase()).to_string(),
    ]
}

pub const INSTANCE_HEADERS: &[&str] = &["ID", "WARM POOL", "SNAPSHOT", "WORKSPACE", "CONTAINER"];

/// A claimed instance as a row under [`INSTANCE_HEADERS`].
pub fn instance_row(instance: &WarmPoolInstance) -> Vec<String> {
    let or_dash = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
    vec![
        instance.id.clone(),
        instance.warm_pool_id.clone(),
        or_dash(&instance.snapshot_id),
        or_dash(&instance.workspace_path),
        or_dash(&instance.container_id),
    ]
}

/// The phase of a prebuild (UNSPECIFIED when the server sent none).
pub fn prebuild_phase(prebuild: &Prebuild) -> PrebuildPhase {
    prebuildd::domain::phase_of(prebuild)
}

/// `COMPLETED` for PREBUILD_PHASE_COMPLETED: what people type and read.
pub fn prebuild_phase_name(phase: PrebuildPhase) -> &'static str {
    phase.as_str_name().trim_start_matches("PREBUILD_PHASE_")
}

/// The same short form for warm pools: `READY`.
pub fn warm_pool_phase_name(phase: WarmPoolPhase) -> &'static str {
    phase.as_str_name().trim_start_matches("WARM_POOL_PHASE_")
}

/// Time since `created`, in its largest whole unit: `42s`, `5m`, `3h`, `2d`.
fn age(created: Option<&pbjson_types::Timestamp>) -> String {
    let Some(created) = created else { return "-".into() };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let seconds = (now - created.seconds).max(0);
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// One prebuild as a one-row table (with its source, failure or warning
/// below), or its JSON (exactly the resource).
pub fn print_prebuild(format: Format, prebuild: &Prebuild, details: &Details) {
    match format {
        Format::Json => print_json(prebuild),
        Format::Table => {
            print_table(PREBUILD_HEADERS, &[prebuild_row(prebuild, details)]);
            if let Some(source) = details.source(&prebuild.id) {
                print_source(source);
            }
            let status = prebuild.status.clone().unwrap_or_default();
            if !status.failure_message.is_empty() {
                line(&format!("failure: {}", status.failure_message));
            }
            if !status.warning_message.is_empty() {
                line(&format!("warning: {}", status.warning_message));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_use_the_largest_whole_unit() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let ago = |s: i64| age(Some(&pbjson_types::Timestamp { seconds: now - s, nanos: 0 }));
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(5 * 60 + 3), "5m");
        assert_eq!(ago(3 * 3600), "3h");
        assert_eq!(ago(2 * 86_400 + 1), "2d");
        assert_eq!(age(None), "-");
    }
}
