//! A real Redis (Debian's `redis-server`) on a loopback port, for the tests of state shared
//! by several edge instances.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for, Proc};

/// A throwaway Redis on a loopback port, without persistence.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    /// `requirepass`, when set.
    password: Option<String>,
    proc: Option<Proc>,
}

impl RedisServer {
    pub fn start(dir: &Path) -> RedisServer {
        Self::start_with_password(dir, None)
    }

    pub fn start_with_password(dir: &Path, password: Option<&str>) -> RedisServer {
        let mut redis = RedisServer {
            port: free_port(),
            dir: dir.to_path_buf(),
            password: password.map(str::to_string),
            proc: None,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    pub fn ping(&self) -> bool {
        let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
        let (request, expected): (String, &[u8]) = match &self.password {
            Some(pw) => (format!("AUTH {pw}\r\nPING\r\n"), b"+OK\r\n+PONG\r\n"),
            None => ("PING\r\n".to_string(), b"+PONG\r\n"),
        };
        let mut reply = vec![0u8; expected.len()];
        tcp.write_all(request.as_bytes()).is_ok()
            && tcp.read_exact(&mut reply).is_ok()
            && reply == expected
    }

    /// One command's integer reply (RESP), e.g. `PTTL key`.
    pub fn integer(&self, args: &[&str]) -> i64 {
        assert!(self.password.is_none(), "integer() speaks without AUTH");
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request += &format!("${}\r\n{arg}\r\n", arg.len());
        }
        tcp.write_all(request.as_bytes()).unwrap();
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            tcp.read_exact(&mut byte).unwrap();
            reply.push(byte[0]);
        }
        let text = String::from_utf8(reply).unwrap();
        text.trim()
            .strip_prefix(':')
            .unwrap_or_else(|| panic!("not an integer reply: {text}"))
            .parse()
            .unwrap()
    }

    pub fn stop(&mut self) {
        self.proc = None;
        wait_for("redis to stop", Duration::from_secs(10), || {
            (!self.ping()).then_some(())
        });
    }

    /// Starts (again) on the same port, empty.
    pub fn restart(&mut self) {
        self.proc = Some(Proc::spawn(
            Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                // DEBUG SLEEP plays a Redis that stops answering (tests only).
                .args(["--enable-debug-command", "local"])
                .args(
                    self.password
                        .iter()
                        .flat_map(|pw| ["--requirepass".to_string(), pw.clone()]),
                )
                .arg("--dir")
                .arg(&self.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        ));
        wait_for("redis to answer", Duration::from_secs(20), || {
            self.ping().then_some(())
        });
    }
}
