//! The `prebuildd` binary as a child process, with its stderr collected
//! line by line (for waiting on log lines and for assertion messages).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// The lines a child has written to stderr so far.
pub type Log = Arc<Mutex<Vec<String>>>;

/// Starts `prebuildd <args>` at log level info, stdin and stdout closed.
pub fn spawn_prebuildd<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> (Child, Log) {
    spawn_prebuildd_under(&[], args)
}

/// Starts `<wrapper...> prebuildd <args>`, the wrapper a program that execs
/// its arguments in a changed context (`setpriv` with fewer capabilities).
pub fn spawn_prebuildd_under<S: AsRef<OsStr>>(wrapper: &[&str], args: impl IntoIterator<Item = S>) -> (Child, Log) {
    let program = OsStr::new(env!("CARGO_BIN_EXE_prebuildd"));
    let mut line: Vec<&OsStr> = wrapper.iter().map(OsStr::new).collect();
    line.push(program);
    let mut child = Command::new(line[0])
        .args(&line[1..])
        .args(args)
        .env("PREBUILDD_LOG", "info")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the prebuildd binary starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let log = Log::default();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    (child, log)
}
