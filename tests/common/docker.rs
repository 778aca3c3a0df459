//! A private Docker engine (Debian `docker.io`) for client tests: its own data root, exec
//! root, socket and pid file under the test's folder, no iptables and no default bridge
//! (`--network host` and user networks still work), stopped with SIGTERM on drop.
//! Recipe: `../shared/reference/real-servers.md`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::{tool, Proc};

/// The docker CLI that matches Debian's engine: a newer CLI first on `PATH` may want
/// buildx for `docker build`.
pub fn docker_cli() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/docker");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("docker")
    }
}

/// The CLI against the engine under `dir`, with the config folder there.
fn cli(dir: &Path) -> Command {
    let mut cmd = Command::new(docker_cli());
    cmd.env(
        "DOCKER_HOST",
        format!("unix://{}", dir.join("docker.sock").display()),
    )
    .env("DOCKER_CONFIG", dir.join("config"))
    .env("DOCKER_BUILDKIT", "0")
    .stdin(Stdio::null());
    cmd
}

/// A running engine. `docker(…)` runs the CLI against it with a config folder of its own
/// (where `docker login` stores credentials).
pub struct Dockerd {
    pub dir: PathBuf,
    proc: Proc,
    /// `/etc/docker/certs.d/<host:port>` folders this engine was told to trust; removed on
    /// drop (the engine reads CAs only from there).
    trusted: Vec<PathBuf>,
}

impl Dockerd {
    /// Starts an engine under `dir`. `Err` names the missing tool (the caller skips).
    pub fn start(dir: &Path) -> Result<Dockerd, String> {
        Self::start_with(dir, &[])
    }

    /// Like [`Dockerd::start`] with more `dockerd` arguments (`--registry-mirror URL`).
    pub fn start_with(dir: &Path, extra: &[&str]) -> Result<Dockerd, String> {
        let dockerd = tool("dockerd")
            .ok_or("dockerd is not installed (scripts/install-deps installs docker.io)")?;
        std::fs::create_dir_all(dir.join("config")).unwrap();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let mut proc = Proc::spawn(
            Command::new(dockerd)
                .args(["--storage-driver", "overlay2", "--iptables=false"])
                .args(["--ip6tables=false", "--bridge=none", "--data-root"])
                .arg(dir.join("data"))
                .arg("--exec-root")
                .arg(dir.join("exec"))
                .arg("-H")
                .arg(format!("unix://{}", dir.join("docker.sock").display()))
                .arg("--pidfile")
                .arg(dir.join("dockerd.pid"))
                .args(extra)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let ready = || {
            cli(dir)
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let started = proc.wait_started(Duration::from_secs(60), ready);
        let engine = Dockerd {
            dir: dir.to_path_buf(),
            proc,
            trusted: Vec::new(),
        };
        if let Err(why) = started {
            panic!("dockerd did not answer: {why}; its log:\n{}", engine.log());
        }
        Ok(engine)
    }

    /// The CLI against this engine.
    pub fn command(&self) -> Command {
        cli(&self.dir)
    }

    /// `DOCKER_HOST` for this engine, for other tools (docker-compose, scripts/image).
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("docker CLI runs")
    }

    /// `docker login` with the password on standard input.
    pub fn login(&self, registry: &str, user: &str, password: &str) -> Output {
        let mut login = self.command();
        login.args(["login", "--username", user, "--password-stdin", registry]);
        super::run_with_input(&mut login, password)
    }

    /// Makes the engine trust `ca` for `authority` (`host:port`).
    pub fn trust(&mut self, authority: &str, ca: &Path) {
        let folder = Path::new("/etc/docker/certs.d").join(authority);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(ca, folder.join("ca.crt")).unwrap();
        self.trusted.push(folder);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        for folder in &self.trusted {
            let _ = std::fs::remove_dir_all(folder);
        }
        // Containers still running are stopped by the engine itself on SIGTERM.
        self.proc.terminate(Duration::from_secs(30));
        // The engine leaves its network namespace mounted; the folder cannot go otherwise.
        let _ = Command::new("umount")
            .arg(self.dir.join("exec/netns/default"))
            .stderr(Stdio::null())
            .status();
    }
}

/// Docker's exit code, standard output and error as one text for assertion messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
