//! Processes and ports: [`Proc`] (a child killed on drop, polled until ready),
//! [`free_port`] (an ephemeral loopback port kept reserved) and [`wait_for`] (poll with a
//! deadline instead of sleeping).

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sockets that keep the ports [`free_port`] handed out reserved until the test binary exits.
static RESERVED_PORTS: Mutex<Vec<socket2::Socket>> = Mutex::new(Vec::new());

/// An ephemeral port chosen by the OS and kept reserved for the rest of this test binary.
///
/// A port that is merely free a moment ago can be handed to someone else (another test's
/// port-0 bind, or an outgoing connection) before the process meant to listen on it binds,
/// and that process then fails to start. So the port stays bound here, with `SO_REUSEADDR`
/// and never listening: the kernel hands it to no one else, while the edge, the registry,
/// Redis and pebble (all of which set `SO_REUSEADDR`) can still listen on it, also after a
/// restart.
pub fn free_port() -> u16 {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    RESERVED_PORTS.lock().unwrap().push(socket);
    port
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        Proc {
            child: Some(
                cmd.spawn()
                    .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
            ),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`; whether it exited on the
    /// SIGTERM. Daemons that start children of their own (dockerd, containerd) need the
    /// SIGTERM to stop them.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        false
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Polls `ready` every 50 ms until it holds, while this process keeps running.
    /// `Err` says why not (it exited, or `timeout` passed); callers add the process's log.
    pub fn wait_started(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while !ready() {
            if !self.is_running() {
                return Err("exited at start".to_string());
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cmd` with `input` on its standard input (closed after it), capturing its output:
/// what a password read from stdin (`--password-stdin`, `hash-password`) takes.
pub fn run_with_input(cmd: &mut std::process::Command, input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// The executable `name` on `PATH`, if installed.
pub fn tool(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|file| {
            std::fs::metadata(file)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Says why a test does not run: only for a tool that could not be installed. Under
/// `CI=true` (where `scripts/install-deps` installs every one of them) it fails instead.
pub fn skip(test: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} cannot run under CI=true: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// Says why a test does not run on this machine for a reason no package fixes (it needs
/// root), in CI too.
pub fn skip_here(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}
