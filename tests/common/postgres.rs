//! A real PostgreSQL server for the tests: one throwaway cluster per test
//! binary, started on first use, and a fresh database per test, so tests
//! that share the cluster still run in parallel and never see each other's
//! rows.
//!
//! The server programs are Debian's `postgresql` package
//! (`/usr/lib/postgresql/<version>/bin`, the newest version there;
//! `PREBUILDD_TEST_PG_BIN` names another directory, and without either an
//! `initdb` on PATH is used). Nothing is downloaded. A test that needs the
//! server fails, loudly, when it is missing: it never skips.
//!
//! The cluster: `initdb` into a temp dir (trust authentication, no fsync),
//! then the server itself on 127.0.0.1 at a free port, with its Unix socket
//! in that dir and `fsync=off` (the data is thrown away). As root both run as
//! the `postgres` user, since PostgreSQL refuses to run as root.
//!
//! Lifetime: the server is not left to `pg_ctl` as a daemon but is the child
//! of a thread that lives as long as the test process, and the kernel sends
//! it SIGQUIT (immediate shutdown) when that thread goes
//! (`PR_SET_PDEATHSIG`), so it dies with the test process however that ends,
//! SIGKILL included. On a normal exit an `atexit` handler also stops it and
//! removes the temp dir; a dir that a killed run left behind is removed by
//! the next run.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The temp dirs of clusters, `<prefix><pid of the test process>`.
const DIR_PREFIX: &str = "prebuildd-test-pg-";

/// A running cluster.
pub struct Cluster {
    pub port: u16,
    root: PathBuf,
    pid: libc::pid_t,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The cluster of this test process, started on first use (a few seconds).
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(start)
}

impl Cluster {
    /// The URL of `database` as the `postgres` superuser over TCP.
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn stop(&self) {
        // SAFETY: plain syscalls on a pid this process started.
        unsafe { libc::kill(self.pid, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        // The waiting thread reaps it; then the pid is gone.
        while unsafe { libc::kill(self.pid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A new, empty database on the cluster; returns its URL.
pub async fn fresh_database() -> String {
    let cluster = cluster();
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let (client, connection) = tokio_postgres::connect(&cluster.url("postgres"), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server at {}: {e}", cluster.url("postgres")));
    let connection = tokio::spawn(connection);
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e:?}"));
    drop(client);
    let _ = connection.await;
    cluster.url(&name)
}

/// The directory with `initdb`, `postgres` and `pg_isready`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PREBUILDD_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    // Debian: /usr/lib/postgresql/<major version>/bin; the newest.
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse::<u32>().ok()?, entry.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file() && bin.join("postgres").is_file())
        .max_by_key(|(version, _)| *version);
    if let Some((_, bin)) = newest {
        return bin;
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("initdb"))
        .find(|initdb| initdb.is_file())
        .and_then(|initdb| std::fs::canonicalize(initdb).ok())
        .and_then(|initdb| initdb.parent().map(Path::to_path_buf));
    on_path.unwrap_or_else(|| {
        panic!(
            "the PostgreSQL server programs (initdb, postgres) are not installed: these tests need Debian's \
             postgresql package (bash scripts/install-test-tools installs it), or PREBUILDD_TEST_PG_BIN naming their directory"
        )
    })
}

/// The user and group to run PostgreSQL as: `postgres` when we are root.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions; getpwnam runs once (under the
    // OnceLock) and its result is read at once.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let name = CString::new("postgres").expect("no NUL");
        let entry = libc::getpwnam(name.as_ptr());
        assert!(
            !entry.is_null(),
            "running as root, but there is no `postgres` user to run PostgreSQL as (Debian's postgresql package creates it)"
        );
        Some(((*entry).pw_uid, (*entry).pw_gid))
    }
}

fn command(bin: &Path, program: &str, user: Option<(u32, u32)>, cwd: &Path) -> Command {
    let mut command = Command::new(bin.join(program));
    command.current_dir(cwd).env_remove("PGDATA").stdin(Stdio::null());
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

fn chown(path: &Path, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

/// Removes cluster dirs whose test process is gone (killed before its
/// `atexit` ran).
fn sweep_stale_dirs() {
    for entry in std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)).and_then(|p| p.parse::<libc::pid_t>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

extern "C" fn stop_at_exit() {
    if let Some(cluster) = CLUSTER.get() {
        cluster.stop();
    }
}

fn start() -> Cluster {
    let started = Instant::now();
    sweep_stale_dirs();
    let bin = bin_dir();
    let user = server_user();
    let root = std::env::temp_dir().join(format!("{DIR_PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let socket_dir = root.join("socket");
    std::fs::create_dir_all(&socket_dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", socket_dir.display()));
    chown(&root, user);
    chown(&socket_dir, user);
    let data = root.join("data");

    let initdb = command(&bin, "initdb", user, &root)
        .args(["--pgdata"])
        .arg(&data)
        .args(["--username=postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.join("initdb").display()));
    assert!(
        initdb.status.success(),
        "initdb failed: {}{}",
        String::from_utf8_lossy(&initdb.stdout),
        String::from_utf8_lossy(&initdb.stderr)
    );

    // A free port can be taken between our probe and the server's bind:
    // then the server exits and we try another.
    let mut last_log = String::new();
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let log_path = root.join(format!("server-{port}.log"));
        let log = std::fs::File::create(&log_path).expect("server log");
        let mut server = command(&bin, "postgres", user, &root);
        server
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=300"])
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it runs in the child between
        // fork and exec, after the switch to the server's user (which would
        // otherwise clear it).
        unsafe {
            server.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let exited = Arc::new(AtomicBool::new(false));
        let (pid_tx, pid_rx) = std::sync::mpsc::channel();
        let exited_flag = exited.clone();
        // The server's parent: this thread never ends while the server runs.
        std::thread::Builder::new()
            .name("postgres-parent".into())
            .spawn(move || match server.spawn() {
                Ok(mut child) => {
                    let _ = pid_tx.send(Ok(child.id() as libc::pid_t));
                    let _ = child.wait();
                    exited_flag.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                }
            })
            .expect("thread");
        let pid = pid_rx.recv().expect("the parent thread answers").unwrap_or_else(|e| panic!("cannot start postgres: {e}"));

        let deadline = Instant::now() + Duration::from_secs(60);
        while !exited.load(Ordering::SeqCst) && Instant::now() < deadline {
            let ready = command(&bin, "pg_isready", None, &root)
                .args(["--quiet", "--host=127.0.0.1", "--port", &port.to_string(), "--username=postgres"])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                let cluster = Cluster { port, root: root.clone(), pid };
                // SAFETY: registers a plain function; it runs at exit.
                unsafe { libc::atexit(stop_at_exit) };
                eprintln!("test PostgreSQL server on 127.0.0.1:{port} (in {}), up in {:?}", root.display(), started.elapsed());
                return cluster;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: stops the server we started, if it still runs.
        unsafe { libc::kill(pid, libc::SIGQUIT) };
        last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if !exited.load(Ordering::SeqCst) {
            break;
        }
    }
    panic!("the test PostgreSQL server did not start; its log:\n{last_log}");
}
