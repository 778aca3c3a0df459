//! A containerd of the test's own (root, state and sockets under the test's folder, no CRI
//! plugin), driven with `ctr`, stopped with SIGTERM on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::Proc;

/// A containerd of the test's own (root, state and sockets under `dir`, no CRI plugin).
pub struct Containerd {
    socket: PathBuf,
    proc: Proc,
}

impl Containerd {
    pub fn start(dir: &Path) -> Containerd {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                sock = socket.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let mut proc = Proc::spawn(
            Command::new("containerd")
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let ready = || {
            Command::new("ctr")
                .arg("--address")
                .arg(&socket)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if let Err(why) = proc.wait_started(Duration::from_secs(30), ready) {
            let log = std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default();
            panic!("containerd did not answer: {why}; its log:\n{log}");
        }
        Containerd { socket, proc }
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "test"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.proc.terminate(Duration::from_secs(10));
    }
}
