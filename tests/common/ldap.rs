//! A real OpenLDAP server (Debian's `slapd`) for the LDAP tests: a private instance on two
//! loopback ports, `ldap://` (plain and StartTLS) and `ldaps://`, with a certificate from
//! its own test CA and a small seeded directory. Real slapd rather than a mock, so binds,
//! ACLs, TLS and outages behave as they will in production.
//!
//! The directory under `dc=example,dc=com`:
//! - `cn=registry,ou=services`: the service account the edge binds as
//!   ([`Slapd::bind_dn`], [`Slapd::bind_password`]); it may read people and groups;
//! - `ou=people`: `alice`, `bob`, `carol` (`inetOrgPerson`, password `<uid>-pw`);
//! - `ou=groups`: `platform` (alice) and `developers` (alice, bob) (`groupOfNames`).
//!
//! Users may bind and read their own entry; anonymous may bind but sees nothing.
//! slapd daemonises, so it is stopped by the pid in its pid file, polled until gone;
//! [`Slapd::stop`] and [`Slapd::start_again`] (same ports, same data) simulate an outage.
//! Tests call [`Slapd::available`] first and skip when slapd or ldap-utils is missing.
//! Administration runs the ldap-utils CLI as the root DN (`cn=admin`).

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, wait_for};

const SUFFIX: &str = "dc=example,dc=com";
const ADMIN_DN: &str = "cn=admin,dc=example,dc=com";
const ADMIN_PASSWORD: &str = "admin-pw";
const BIND_DN: &str = "cn=registry,ou=services,dc=example,dc=com";
const BIND_PASSWORD: &str = "registry-bind-pw";
const USER_BASE: &str = "ou=people,dc=example,dc=com";
const GROUP_BASE: &str = "ou=groups,dc=example,dc=com";
/// How long slapd gets to start or stop.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A running slapd; stopped on drop.
pub struct Slapd {
    dir: PathBuf,
    conf: PathBuf,
    pid_file: PathBuf,
    port: u16,
    ldaps_port: u16,
    ca: PathBuf,
    /// The daemon's pid while it runs.
    pid: Option<i32>,
}

impl Slapd {
    /// Whether slapd and the ldap-utils CLI are installed.
    pub fn available() -> bool {
        slapd_binary().is_some() && on_path("ldapadd") && on_path("ldapwhoami")
    }

    /// Makes a CA, a server certificate, a config and a database under `dir`, starts
    /// slapd on two free loopback ports and seeds the directory.
    pub fn start(dir: &Path) -> Slapd {
        assert!(
            Self::available(),
            "slapd or ldap-utils is not installed: check Slapd::available() first"
        );
        let port = free_port();
        let ldaps_port = free_port();
        let dir = dir.join(format!("slapd-{port}"));
        std::fs::create_dir_all(dir.join("db")).unwrap();
        let (ca, cert, key) = super::ca_and_server_cert(&dir, "registry-edge test LDAP CA");
        let conf = dir.join("slapd.conf");
        let pid_file = dir.join("slapd.pid");
        std::fs::write(&conf, config(&dir, &pid_file, &ca, &cert, &key)).unwrap();
        let mut slapd = Slapd {
            dir,
            conf,
            pid_file,
            port,
            ldaps_port,
            ca,
            pid: None,
        };
        slapd.start_again();
        slapd.admin("ldapadd", &[], Some(&seed()));
        slapd
    }

    /// `ldap://127.0.0.1:<port>`: plain LDAP, and StartTLS.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:<port>`: LDAP over TLS from the first byte.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// The PEM CA certificate that signed the server's (SANs `127.0.0.1` and `localhost`).
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// The service account's DN: it may search people and groups.
    pub fn bind_dn(&self) -> &'static str {
        BIND_DN
    }

    pub fn bind_password(&self) -> &'static str {
        BIND_PASSWORD
    }

    pub fn user_base(&self) -> &'static str {
        USER_BASE
    }

    pub fn group_base(&self) -> &'static str {
        GROUP_BASE
    }

    /// `uid=<uid>,ou=people,dc=example,dc=com`.
    pub fn user_dn(&self, uid: &str) -> String {
        format!("uid={uid},{USER_BASE}")
    }

    /// Adds the user `uid` and makes it a `member` of each of `groups` (which must exist).
    pub fn add_user(&self, uid: &str, password: &str, groups: &[&str]) {
        let dn = self.user_dn(uid);
        let mut ldif = format!(
            "dn: {dn}\nchangetype: add\n{}\n",
            person_attributes(uid, password)
        );
        for group in groups {
            ldif.push_str(&format!(
                "dn: cn={group},{GROUP_BASE}\nchangetype: modify\nadd: member\nmember: {dn}\n\n"
            ));
        }
        self.admin("ldapmodify", &[], Some(&ldif));
    }

    /// Removes the user `uid` from its groups, then deletes it. A group it was the only
    /// member of keeps the empty DN as member (`groupOfNames` needs one).
    pub fn delete_user(&self, uid: &str) {
        let dn = self.user_dn(uid);
        let groups = self.admin(
            "ldapsearch",
            &[
                "-LLL",
                "-o",
                "ldif-wrap=no",
                "-b",
                GROUP_BASE,
                &format!("(member={dn})"),
                "member",
            ],
            None,
        );
        let mut ldif = String::new();
        // -LLL prints one blank-line-separated record per group: its dn, then its members.
        for record in groups.split("\n\n").filter(|r| !r.trim().is_empty()) {
            let mut lines = record.lines();
            let group = lines.next().unwrap().strip_prefix("dn: ").unwrap();
            let others = lines
                .filter_map(|l| l.strip_prefix("member: "))
                .filter(|m| !m.eq_ignore_ascii_case(&dn))
                .count();
            let change = if others == 0 {
                "replace: member\nmember:\n".to_string()
            } else {
                format!("delete: member\nmember: {dn}\n")
            };
            ldif.push_str(&format!("dn: {group}\nchangetype: modify\n{change}\n"));
        }
        ldif.push_str(&format!("dn: {dn}\nchangetype: delete\n"));
        self.admin("ldapmodify", &[], Some(&ldif));
    }

    /// Removes the user `uid` from `group` (which keeps other members).
    pub fn leave_group(&self, uid: &str, group: &str) {
        let ldif = format!(
            "dn: cn={group},{GROUP_BASE}\nchangetype: modify\ndelete: member\nmember: {}\n",
            self.user_dn(uid)
        );
        self.admin("ldapmodify", &[], Some(&ldif));
    }

    /// Replaces the user's `userPassword` (plain text).
    pub fn set_password(&self, uid: &str, password: &str) {
        let ldif = format!(
            "dn: {}\nchangetype: modify\nreplace: userPassword\nuserPassword: {password}\n",
            self.user_dn(uid)
        );
        self.admin("ldapmodify", &[], Some(&ldif));
    }

    /// Stops slapd (TERM to the pid in its pid file) and waits until the process is gone
    /// and both ports refuse connections.
    pub fn stop(&mut self) {
        if let Err(why) = self.shutdown() {
            panic!("slapd did not stop: {why}");
        }
    }

    /// Starts slapd (again) on the same ports with the same database and waits until the
    /// admin can bind.
    pub fn start_again(&mut self) {
        assert!(self.pid.is_none(), "slapd is already running");
        // The fresh pid file is how we learn the daemon's pid.
        let _ = std::fs::remove_file(&self.pid_file);
        let listen = format!("ldap://127.0.0.1:{}/ {}/", self.port, self.ldaps_url());
        let mut cmd = Command::new(slapd_binary().unwrap());
        cmd.arg("-f").arg(&self.conf).args(["-h", &listen]);
        if running_as_root() {
            // As in the reference recipe; any other user can only run it as itself.
            cmd.args(["-u", "root"]);
        }
        // slapd forks; the parent exits with the status of the daemon's start.
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        if !out.status.success() {
            // A daemonised slapd writes its reasons to syslog only: ask slaptest instead.
            panic!(
                "{cmd:?} failed ({}), {}\nslaptest says: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.slaptest()
            );
        }
        let pid = wait_for("slapd's pid file", TIMEOUT, || {
            let text = std::fs::read_to_string(&self.pid_file).ok()?;
            text.trim().parse::<i32>().ok()
        });
        self.pid = Some(pid);
        wait_for("slapd to accept the admin's bind", TIMEOUT, || {
            assert!(is_alive(pid), "slapd (pid {pid}) exited at start");
            let out = self.ldap("ldapwhoami", &["-D", ADMIN_DN, "-w", ADMIN_PASSWORD], None);
            out.status.success().then_some(())
        });
    }

    /// TERM, then KILL if slapd is still there after the timeout; `Err` says what is
    /// still there.
    fn shutdown(&mut self) -> Result<(), String> {
        let Some(pid) = self.pid.take() else {
            return Ok(());
        };
        use nix::sys::signal::{kill, Signal};
        let pid_t = nix::unistd::Pid::from_raw(pid);
        let _ = kill(pid_t, Signal::SIGTERM);
        if !poll(TIMEOUT, || !is_alive(pid)) {
            let _ = kill(pid_t, Signal::SIGKILL);
            return Err(format!("pid {pid} ignored TERM for {TIMEOUT:?}; killed"));
        }
        let ports = [self.port, self.ldaps_port];
        let refused = || {
            ports
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_err())
        };
        if !poll(TIMEOUT, refused) {
            return Err(format!("ports {ports:?} still accept connections"));
        }
        Ok(())
    }

    /// Runs an ldap-utils tool against the plain URL as the root DN; panics on failure,
    /// returns its stdout.
    fn admin(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> String {
        let mut all = vec!["-D", ADMIN_DN, "-w", ADMIN_PASSWORD];
        all.extend_from_slice(args);
        let out = self.ldap(tool, &all, stdin);
        assert!(
            out.status.success(),
            "{tool} {args:?} as admin failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            stdin.unwrap_or_default()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `tool -x -H <url> args…`, ignoring ldap.conf, ~/.ldaprc and LDAP* variables.
    fn ldap(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(tool)
            .args(["-x", "-H", &self.url()])
            .args(args)
            .env("LDAPNOINIT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        let mut input = child.stdin.take().unwrap();
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn slaptest(&self) -> String {
        match Command::new("slaptest").arg("-f").arg(&self.conf).output() {
            Ok(out) => String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).to_string(),
            Err(e) => format!("(cannot run slaptest: {e})"),
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Err(why) = self.shutdown() {
            eprintln!("slapd in {}: {why}", self.dir.display());
        }
    }
}

/// The old-style `slapd.conf`: schemas, TLS files, one mdb database and its ACL.
fn config(dir: &Path, pid_file: &Path, ca: &Path, cert: &Path, key: &Path) -> String {
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let (dir, pid_file, ca, cert, key) =
        (path(dir), path(pid_file), path(ca), path(cert), path(key));
    format!(
        r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {pid_file}
TLSCACertificateFile {ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}

database mdb
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PASSWORD}
directory {dir}/db
# Passwords: users may change their own, anyone may bind with one, nobody may read them.
access to attrs=userPassword
  by self write
  by anonymous auth
  by * none
# Everything else: the service account reads (searches) it all, users their own entry.
access to *
  by dn.exact="{BIND_DN}" read
  by self read
  by * none
"#
    )
}

/// The seed: the tree, the service account, three users and two groups.
fn seed() -> String {
    let mut ldif = format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n"
    );
    for ou in ["people", "groups", "services"] {
        ldif.push_str(&format!(
            "dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n\n"
        ));
    }
    ldif.push_str(&format!(
        "dn: {BIND_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
         cn: registry\ndescription: registry-edge service account\nuserPassword: {BIND_PASSWORD}\n\n"
    ));
    for uid in ["alice", "bob", "carol"] {
        ldif.push_str(&format!(
            "dn: uid={uid},{USER_BASE}\n{}\n",
            person_attributes(uid, &format!("{uid}-pw"))
        ));
    }
    for (group, members) in [
        ("platform", &["alice"][..]),
        ("developers", &["alice", "bob"]),
    ] {
        ldif.push_str(&format!(
            "dn: cn={group},{GROUP_BASE}\nobjectClass: groupOfNames\ncn: {group}\n"
        ));
        for member in members {
            ldif.push_str(&format!("member: uid={member},{USER_BASE}\n"));
        }
        ldif.push('\n');
    }
    ldif
}

/// An `inetOrgPerson`'s attributes, one per line.
fn person_attributes(uid: &str, password: &str) -> String {
    format!(
        "objectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
         mail: {uid}@example.com\nuserPassword: {password}\n"
    )
}

/// slapd's path: on PATH, or in /usr/sbin (not on a normal user's PATH).
fn slapd_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("slapd"))
        .find(|p| p.is_file())
}

fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Whether `pid` is a live process. A zombie counts as gone: the daemon is reparented
/// to pid 1, which may never reap it (it does not here), but its sockets are closed.
fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) state …": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Polls `done` every 50 ms until it holds (true) or `timeout` passes (false).
fn poll(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
