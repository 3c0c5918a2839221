//! The tables the docker bench prints.

use super::*;

pub(super) fn print_prebuilds(all: &[Prebuilt], snapshot_layer: u64) {
    let Some(first) = all.first() else { return };
    let mut header = format!("{:<52}", "step (from the prebuild's log, as it was written), s");
    for n in 1..=all.len() {
        header += &format!(" {:>8}", if n == 1 { "#1 cold".to_string() } else { format!("#{n}") });
    }
    println!("{header} {:>8}", "p50");
    let cell = |d: Option<Duration>| d.map_or(format!(" {:>8}", "n/a"), |d| format!(" {:>8.2}", d.as_secs_f64()));
    for (index, (step, _)) in first.steps.iter().enumerate() {
        let sample: Vec<Option<Duration>> = all.iter().map(|p| p.steps.get(index).and_then(|(_, d)| *d)).collect();
        let known: Vec<Duration> = sample.iter().flatten().copied().collect();
        let line: String = sample.iter().map(|d| cell(*d)).collect();
        println!("{step:<52}{line} {:>8.2}", p50_max(&known).0 / 1000.0);
    }
    let totals: Vec<Duration> = all.iter().map(|p| p.total).collect();
    let line: String = totals.iter().map(|d| cell(Some(*d))).collect();
    println!("{:<52}{line} {:>8.2}", "total: CreatePrebuild to COMPLETED", p50_max(&totals).0 / 1000.0);
    for (n, prebuilt) in all.iter().enumerate() {
        let phases: Vec<String> = prebuilt.phases.iter().map(|(phase, at)| format!("{phase} {:.2}", at.as_secs_f64())).collect();
        println!("#{} phases first seen by GetPrebuild, s: {}", n + 1, phases.join(", "));
    }
    if let Some(last) = all.last() {
        println!(
            "snapshot {}: image {:.1} MB, its layer {:.1} MB",
            Bench::snapshot_image(&last.id),
            mb(last.image_bytes),
            mb(snapshot_layer)
        );
    }
}

/// Writes dirty pages out (untimed), so that one measurement's writeback
/// does not land in the next.
pub(super) async fn settle() {
    let _ = tokio::process::Command::new("sync").kill_on_drop(true).status().await;
}

pub(super) fn print_claims(rounds: &[Claim], floor: &[Duration]) {
    let opt = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.0}", ms(d)));
    println!(
        "{:<6} {:>7} {:>14} {:>14} {:>9} {:>16} {:>16} {:>14}",
        "claim", "pool", "ClaimInstance", "to exec true", "attempts", "promoted start", "new start", "backfilled"
    );
    println!("{:<6} {:>7} {:>14} {:>14} {:>9} {:>16} {:>16} {:>14}", "", "r+s", "ms", "ms", "", "ms", "ms", "s");
    for (n, claim) in rounds.iter().enumerate() {
        println!(
            "{:<6} {:>7} {:>14.1} {:>14.1} {:>9} {:>16} {:>16} {:>14.2}",
            n + 1,
            claim.shape,
            ms(claim.rpc),
            ms(claim.to_shell),
            claim.attempts,
            opt(claim.promoted),
            opt(claim.fresh),
            claim.backfilled.as_secs_f64()
        );
    }
    let stat = |f: fn(&Claim) -> Option<Duration>| p50_max(&rounds.iter().filter_map(f).collect::<Vec<_>>());
    let (rpc, rpc_max) = stat(|c| Some(c.rpc));
    let (shell, shell_max) = stat(|c| Some(c.to_shell));
    let (filled, filled_max) = stat(|c| Some(c.backfilled));
    println!("ClaimInstance: p50 {rpc:.1} ms, max {rpc_max:.1} ms");
    println!("claim to shell (ClaimInstance, then docker exec true answering): p50 {shell:.1} ms, max {shell_max:.1} ms");
    println!("claim to the pool back at its size: p50 {:.2} s, max {:.2} s", filled / 1000.0, filled_max / 1000.0);
    let (exec, exec_max) = p50_max(floor);
    println!("floor: docker exec true in a running container: p50 {exec:.1} ms, max {exec_max:.1} ms");
    println!("(pool r+s: running + created instances before the claim; promoted/new start: Docker's StartedAt of the replacement, from the claim)");
}

/// Instance start and creation times.
#[derive(Default)]
pub(super) struct Creation {
    pub(super) create: Vec<Duration>,
    pub(super) start: Vec<Duration>,
    pub(super) start_to_shell: Vec<Duration>,
    pub(super) run: Vec<Duration>,
    pub(super) run_to_shell: Vec<Duration>,
}

impl Creation {
    pub(super) fn print(&self, image_bytes: u64) {
        let sum = |a: &[Duration], b: &[Duration]| a.iter().zip(b).map(|(a, b)| *a + *b).collect::<Vec<_>>();
        let create_start = sum(&self.create, &self.start);
        let create_shell = sum(&self.create, &self.start_to_shell);
        println!("{:<56} {:>9} {:>9} {:>10}", format!("({ROUNDS} each; image {:.1} MB)", mb(image_bytes)), "p50 ms", "max ms", "MB/s p50");
        let row = |what: &str, sample: &[Duration], throughput: bool| {
            let (p50, max) = p50_max(sample);
            let rate = if throughput { format!("{:.0}", mb(image_bytes) / (p50 / 1000.0).max(1e-9)) } else { String::new() };
            println!("{what:<56} {p50:>9.1} {max:>9.1} {rate:>10}");
        };
        row("3. docker start of a created instance (CLI returns)", &self.start, false);
        row("3. docker start until docker exec true answers", &self.start_to_shell, false);
        row("4b. docker create (runner's settings)", &self.create, false);
        row("4b. create + start (runner's settings)", &create_start, true);
        row("4b. create + start, until exec answers", &create_shell, true);
        row("4b. baseline: docker run -d (same image, same settings)", &self.run, true);
        row("4b. baseline: docker run -d, until exec answers", &self.run_to_shell, true);
        println!("(overlay2 copies no layer data to make a container: these times do not grow with the image, so MB/s only restates them)");
    }
}
