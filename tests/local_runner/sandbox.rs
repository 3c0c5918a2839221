//! The sandbox of lifecycle commands: a project whose commands look for the
//! server's secrets and other prebuilds' files, and write where they should
//! not, finds nothing and changes nothing outside its workspace; the same
//! project with `sandbox = false` finds everything (the difference the
//! sandbox makes). These tests run the real bwrap: without it they fail.

use super::*;

/// What a fixture's server would hold: contents unique to the test, so that
/// a log quoting them is unmistakable.
struct Planted {
    token_secret: String,
    database: String,
    api_key: String,
}

/// Writes the token secret and the database (with its WAL) into the data
/// dir, and an API key into the configuration file, as a server would.
fn plant(fixture: &Fixture) -> Planted {
    let unique = uuid::Uuid::new_v4();
    let planted =
        Planted { token_secret: format!("token-{unique}"), database: format!("database-{unique}"), api_key: format!("api-key-{unique}") };
    let data = fixture.data_dir();
    std::fs::write(data.join("token-secret"), &planted.token_secret).unwrap();
    std::fs::write(data.join("prebuildd.db"), &planted.database).unwrap();
    std::fs::write(data.join("prebuildd.db-wal"), &planted.database).unwrap();
    std::fs::create_dir_all(fixture.path(CONFIG_FILE).parent().unwrap()).unwrap();
    std::fs::write(fixture.path(CONFIG_FILE), format!("[[api_keys]]\ntoken = \"{}\"\n", planted.api_key)).unwrap();
    planted
}

/// Where the snooping commands look and write.
struct Targets {
    /// Another prebuild's snapshot archive.
    archive: PathBuf,
    /// Another prebuild's (running) workspace.
    neighbour: PathBuf,
    /// A file name for `/tmp`, unique to the test.
    tmp_marker: String,
}

/// A lifecycle script that searches the whole file system for the server's
/// files by name, tries their paths directly, counts the processes it can
/// see, and writes to `/tmp`, outside its workspace, into the data dir and
/// into the neighbour's workspace, and into its own workspace and home.
fn snoop_script(fixture: &Fixture, targets: &Targets) -> String {
    let data = fixture.data_dir();
    let outside = fixture.path("outside.txt");
    let direct = [
        data.join("token-secret"),
        data.join("prebuildd.db"),
        data.join("prebuildd.db-wal"),
        fixture.path(CONFIG_FILE),
        targets.archive.clone(),
        targets.neighbour.join("neighbour.txt"),
    ];
    let direct: Vec<String> = direct.iter().map(|p| format!("'{}'", p.display())).collect();
    format!(
        r#"echo searching
find / \( -path /proc -o -path /sys \) -prune -o \( -name token-secret -o -name 'prebuildd.db*' -o -name '*.tar.zst' \
  -o -name prebuildd.toml -o -name neighbour.txt \) -print 2>/dev/null | sed 's/^/found: /'
for path in {direct}; do
  if [ -e "$path" ]; then echo "exists: $path: $(head -c 200 "$path" | tr -cd '[:print:]')"; fi
done
echo "processes: $(ls /proc | grep -c '^[0-9][0-9]*$')"
if [ -S /run/docker.sock ]; then echo "a docker socket is reachable"; fi
echo written > /tmp/{marker} && echo "wrote /tmp/{marker}"
if echo written > '{outside}' 2>/dev/null; then echo "wrote outside"; else echo "refused outside"; fi
echo written > '{data}/planted' 2>/dev/null
echo written > '{neighbour}/intruder' 2>/dev/null
echo mine > mine.txt
echo home > "$HOME/home.txt"
echo done-searching
"#,
        direct = direct.join(" "),
        marker = targets.tmp_marker,
        outside = outside.display(),
        data = data.display(),
        neighbour = targets.neighbour.display(),
    )
}

/// The snooping project: `snoop.sh` as its onCreateCommand.
fn snoop_repository(fixture: &Fixture, targets: &Targets) -> PathBuf {
    let repo = fixture.path("snoop");
    let devcontainer = r#"{"onCreateCommand": ["sh", "snoop.sh"]}"#;
    repository(&repo, Some(devcontainer), &[("snoop.sh", &snoop_script(fixture, targets))], true);
    repo
}

/// A completed prebuild, so that a snapshot archive exists; returns its path.
async fn an_archive(fixture: &Fixture) -> PathBuf {
    let repo = fixture.path("first");
    repository(&repo, Some(r#"{"onCreateCommand": "echo first > first.txt"}"#), &[], true);
    let prebuild_id = fixture.completed_prebuild(&repo).await;
    fixture.runner.snapshot_path(&prebuild_id)
}

fn tmp_marker() -> String {
    format!("prebuildd-sandbox-test-{}", uuid::Uuid::new_v4())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_commands_see_their_workspace_and_nothing_of_the_server() {
    within(async {
        let fixture = Fixture::new();
        let planted = plant(&fixture);
        let archive = an_archive(&fixture).await;
        let archive_bytes = std::fs::read(&archive).unwrap();

        // A neighbour whose command is still running: its workspace exists.
        let neighbour_repo = fixture.path("neighbour");
        let sleep = format!("sleep {}", 10_000_000 + (uuid::Uuid::new_v4().as_u128() % 80_000_000) as u64);
        let devcontainer = format!(r#"{{"onCreateCommand": "echo neighbour > neighbour.txt; {sleep}"}}"#);
        repository(&neighbour_repo, Some(&devcontainer), &[], true);
        let (neighbour_id, neighbour_environment) = fixture.start(&neighbour_repo.display().to_string()).await;
        let neighbour = fixture.workspace(&neighbour_environment);
        eventually("the neighbour runs", PATIENCE, || !processes_with(&sleep).is_empty()).await;

        let targets = Targets { archive: archive.clone(), neighbour: neighbour.clone(), tmp_marker: tmp_marker() };
        let repo = snoop_repository(&fixture, &targets);
        let (prebuild_id, _) = fixture.start(&repo.display().to_string()).await;
        let (state, _) = fixture.finish(&prebuild_id).await;
        let log = fixture.log(&prebuild_id);
        assert!(matches!(state, JobState::Completed { .. }), "{state:?}\n{log}");
        assert!(log.contains("lifecycle commands run in a bubblewrap sandbox"), "{log}");
        assert!(log.contains("searching") && log.contains("done-searching"), "the whole script ran:\n{log}");

        // It found nothing of this server's: the search by name lists only
        // what other processes on this machine keep elsewhere, and the
        // direct paths do not exist, but for the configuration file, which
        // reads as empty.
        let fixture_dir = fixture.dir.path().canonicalize().unwrap();
        let config = fixture.path(CONFIG_FILE).canonicalize().unwrap();
        for line in log.lines().filter(|line| line.starts_with("found: ")) {
            let path = Path::new(&line["found: ".len()..]);
            assert!(!path.starts_with(&fixture_dir) || path == config, "the sandbox showed {line}\n{log}");
        }
        let exists: Vec<&str> = log.lines().filter(|line| line.starts_with("exists: ")).collect();
        assert_eq!(exists, vec![format!("exists: {}: ", config.display())], "{log}");
        for secret in [&planted.token_secret, &planted.database, &planted.api_key] {
            assert!(!log.contains(secret.as_str()), "{secret} leaked into the log:\n{log}");
        }
        assert!(!log.contains("a docker socket is reachable"), "/run is the sandbox's own:\n{log}");
        let processes: usize = log.lines().find_map(|l| l.strip_prefix("processes: ")).and_then(|n| n.parse().ok()).expect("counted");
        assert!(processes <= 10, "it sees the host's processes ({processes}):\n{log}");

        // It changed nothing outside its workspace: /tmp was its own, the
        // host read-only, the data dir and the neighbour an empty cover.
        assert!(log.contains(&format!("wrote /tmp/{}", targets.tmp_marker)), "{log}");
        assert!(!Path::new("/tmp").join(&targets.tmp_marker).exists(), "the host's /tmp got the file");
        assert!(log.contains("refused outside") && !fixture.path("outside.txt").exists(), "{log}");
        assert!(!fixture.data_dir().join("planted").exists());
        assert!(!neighbour.join("intruder").exists());
        assert_eq!(std::fs::read_to_string(neighbour.join("neighbour.txt")).unwrap(), "neighbour\n");
        assert_eq!(std::fs::read(&archive).unwrap(), archive_bytes, "the other snapshot is untouched");
        assert_eq!(std::fs::read_to_string(fixture.data_dir().join("token-secret")).unwrap(), planted.token_secret);

        // Its own workspace writes are in its snapshot; its home is not.
        let unpacked = unpack(&fixture.runner.snapshot_path(&prebuild_id));
        assert_eq!(std::fs::read_to_string(unpacked.path().join("mine.txt")).unwrap(), "mine\n");
        assert!(!unpacked.path().join("home.txt").exists());

        fixture.runner.stop(&neighbour_id).await.unwrap();
        eventually("the neighbour's command is gone", Duration::from_secs(5), || processes_with(&sleep).is_empty()).await;
        fixture.runner.remove(&neighbour_id).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_sandbox_the_same_commands_see_the_servers_files() {
    within(async {
        let fixture = Fixture::with_sandbox(false);
        let planted = plant(&fixture);
        let archive = an_archive(&fixture).await;
        let targets = Targets { archive: archive.clone(), neighbour: fixture.path("no-neighbour"), tmp_marker: tmp_marker() };
        let repo = snoop_repository(&fixture, &targets);
        let prebuild_id = fixture.completed_prebuild(&repo).await;
        let log = fixture.log(&prebuild_id);
        let host_tmp_file = Path::new("/tmp").join(&targets.tmp_marker);
        let wrote_to_host_tmp = host_tmp_file.exists();
        let _ = std::fs::remove_file(&host_tmp_file);

        assert!(log.contains("warning: lifecycle commands run unsandboxed"), "{log}");
        let data = fixture.data_dir().canonicalize().unwrap();
        for found in [data.join("token-secret"), data.join("prebuildd.db"), archive.clone(), fixture.path(CONFIG_FILE)] {
            assert!(log.contains(&format!("found: {}\n", found.display())), "{} not found:\n{log}", found.display());
        }
        for secret in [&planted.token_secret, &planted.database, &planted.api_key] {
            assert!(log.contains(secret.as_str()), "{secret} was readable:\n{log}");
        }
        assert!(wrote_to_host_tmp, "the host's /tmp is shared:\n{log}");
        assert!(log.contains("wrote outside") && fixture.path("outside.txt").is_file(), "{log}");
        assert!(fixture.data_dir().join("planted").is_file(), "the data dir is writable:\n{log}");
    })
    .await;
}
