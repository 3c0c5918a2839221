//! A second Docker daemon started by a test, standing in for a second
//! machine: its own data root, exec root (and so its own containerd), pid
//! file and socket under a temp dir, and a bridge of its own made for it
//! (`ip link add ... type bridge`, passed with `--bridge`; never `--bridge
//! none`, which would take the host's docker0 down with it). It runs with
//! `--iptables=false`, so that it leaves the first daemon's chains alone:
//! the runners' isolation is nftables tables of their own and needs nothing
//! of Docker's. Its networks come from an address pool of its own. The
//! tests' base image is copied in offline (`docker save | docker load`).
//! Dropping it removes every container it holds, stops it, and removes its
//! bridge and files.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SecondDaemon {
    child: Child,
    // Dropped after the daemon stopped, in this order.
    _bridge: Bridge,
    dir: tempfile::TempDir,
}

/// The daemon's bridge, removed when dropped.
struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// Runs a command; panics with its stderr if it fails.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} runs ({e}): install it"));
    assert!(output.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

impl SecondDaemon {
    /// Starts the daemon and waits until it answers, then loads `images`
    /// from the first daemon into it.
    pub fn start(images: &[&str]) -> SecondDaemon {
        let dockerd = Path::new("/usr/sbin/dockerd");
        assert!(dockerd.exists(), "/usr/sbin/dockerd is missing: install docker.io (scripts/install-test-tools does)");
        // Short paths: containerd's socket lives under the exec root, and a
        // Unix socket's path has at most 107 bytes.
        let dir = tempfile::Builder::new().prefix("pbd2-").tempdir_in("/tmp").unwrap();
        let tag: u32 = rand_below(0xffffff);
        let bridge = format!("pbdt{tag:06x}");
        // 10.200.0.0/16 to 10.249.0.0/16 for its bridge and its networks:
        // nothing the first daemon hands out by default.
        let second = 200 + rand_below(50);
        run("ip", &["link", "add", &bridge, "type", "bridge"]);
        let bridge = Bridge(bridge);
        run("ip", &["addr", "add", &format!("10.{second}.255.1/24"), "dev", &bridge.0]);
        run("ip", &["link", "set", &bridge.0, "up"]);
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let host = format!("unix://{}", dir.path().join("docker.sock").display());
        let child = Command::new(dockerd)
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("docker.pid"))
            .arg("-H")
            .arg(&host)
            .args(["--bridge", &bridge.0, "--iptables=false"])
            .args(["--default-address-pool", &format!("base=10.{second}.0.0/17,size=24")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd starts");
        let mut daemon = SecondDaemon { child, _bridge: bridge, dir };
        let started = Instant::now();
        while !Command::new("docker").args(["-H", &daemon.host(), "info"]).output().is_ok_and(|o| o.status.success()) {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("the second dockerd exited ({status}); its log:\n{}", daemon.log());
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the second dockerd never answered; its log:\n{}", daemon.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        for image in images {
            let mut save = Command::new("docker").args(["save", image]).stdout(Stdio::piped()).spawn().expect("docker save runs");
            let load = Command::new("docker")
                .args(["-H", &daemon.host(), "load", "-q"])
                .stdin(save.stdout.take().expect("piped"))
                .output()
                .expect("docker load runs");
            assert!(save.wait().is_ok_and(|status| status.success()), "docker save {image} failed");
            assert!(load.status.success(), "loading {image} into the second daemon: {}", String::from_utf8_lossy(&load.stderr));
        }
        daemon
    }

    /// Its socket, as `DOCKER_HOST` or `docker_host` names it.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    /// Runs the docker CLI against it; panics with its stderr if it fails.
    pub fn docker(&self, args: &[&str]) -> String {
        let host = self.host();
        let mut all = vec!["-H", host.as_str()];
        all.extend_from_slice(args);
        run("docker", &all)
    }

    /// Lines of `docker <args>` against it, empty ones dropped.
    pub fn docker_lines(&self, args: &[&str]) -> Vec<String> {
        self.docker(args).lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

/// A number below `bound`, from the clock and the process (no RNG needed).
fn rand_below(bound: u32) -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % bound
}

impl Drop for SecondDaemon {
    fn drop(&mut self) {
        let host = self.host();
        if let Ok(output) = Command::new("docker").args(["-H", &host, "ps", "-aq"]).output() {
            for id in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["-H", &host, "rm", "-f", "-v", id]).output();
            }
        }
        // SIGTERM: the daemon stops its containerd too (a SIGKILL would
        // leave it behind).
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Overlay mounts are gone with the daemon; what is left is files.
        let _ = Command::new("rm").args(["-rf", "--one-file-system"]).arg(self.dir.path()).output();
    }
}
