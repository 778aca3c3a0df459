//! `server` and `admin`: listeners, client deadlines, the public URL.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::error::ConfigError;
use super::file;
use super::keys::{key_table, Changes};
use super::validate::Validator;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub https_listen: Vec<SocketAddr>,
    pub http_listen: Vec<SocketAddr>,
    pub external_url: Option<ExternalUrl>,
    pub threads: usize,
    pub shutdown_grace: Duration,
    pub pid_file: Option<PathBuf>,
    pub client_timeouts: ClientTimeouts,
    pub strict_host: bool,
    pub proxy_protocol: bool,
}

/// How long a client may take; enforced per connection (`listen::stream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// TLS handshake plus request headers.
    pub header: Duration,
    /// Longest pause inside a request body or a response.
    pub body: Duration,
    /// No request in progress.
    pub idle: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            header: Duration::from_secs(60),
            body: Duration::from_secs(60),
            idle: Duration::from_secs(75),
        }
    }
}

/// The public `https://host[:port]` of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalUrl {
    /// `host` or `host:port`; the port is omitted when it is 443.
    pub authority: String,
}

pub(super) fn server_settings(
    v: &Validator,
    server: file::ServerFile,
) -> Result<ServerSettings, ConfigError> {
    let file::ServerFile {
        https_listen,
        http_listen,
        external_url,
        threads,
        shutdown_grace,
        pid_file,
        header_timeout,
        body_timeout,
        idle_timeout,
        strict_host,
        proxy_protocol,
    } = server;
    let https_listen = v.listen("server.https_listen", &https_listen)?;
    let http_listen = v.listen("server.http_listen", &http_listen)?;
    if https_listen.is_empty() && http_listen.is_empty() {
        return Err(v.invalid(
            "server",
            "no listener: https_listen and http_listen are both empty",
        ));
    }
    let external_url = external_url
        .map(|text| parse_external_url(v, &text))
        .transpose()?;
    let threads = match threads {
        Some(0) => return Err(v.invalid("server.threads", "must be at least 1")),
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    Ok(ServerSettings {
        https_listen,
        http_listen,
        external_url,
        threads,
        shutdown_grace: v.duration(
            "server.shutdown_grace",
            shutdown_grace.as_deref(),
            Duration::from_secs(60),
        )?,
        pid_file: pid_file.map(|p| v.file_path(&p)),
        client_timeouts: client_timeouts(v, header_timeout, body_timeout, idle_timeout)?,
        strict_host: strict_host.unwrap_or(false),
        proxy_protocol: proxy_protocol.unwrap_or(false),
    })
}

key_table! {
    // Listeners, worker threads and the PROXY protocol expectation are set up at start.
    HTTPS_LISTEN = AtRestart("server.https_listen");
    HTTP_LISTEN = AtRestart("server.http_listen");
    // Read per request.
    EXTERNAL_URL = Live("server.external_url");
    THREADS = AtRestart("server.threads");
    // The drain task and the pid file are set up at start.
    SHUTDOWN_GRACE = AtRestart("server.shutdown_grace");
    PID_FILE = AtRestart("server.pid_file");
    // Read for every accepted connection.
    HEADER_TIMEOUT = Live("server.header_timeout");
    BODY_TIMEOUT = Live("server.body_timeout");
    IDLE_TIMEOUT = Live("server.idle_timeout");
    STRICT_HOST = Live("server.strict_host");
    PROXY_PROTOCOL = AtRestart("server.proxy_protocol");
    // The admin listener is bound at start.
    ADMIN_LISTEN = AtRestart("admin.listen");
    ADMIN_PUBLIC = AtRestart("admin.public");
}

/// Notes which `server` keys differ between `old` and `new`.
pub(super) fn server_changes(old: &ServerSettings, new: &ServerSettings, changes: &mut Changes) {
    let ServerSettings {
        https_listen,
        http_listen,
        external_url,
        threads,
        shutdown_grace,
        pid_file,
        client_timeouts,
        strict_host,
        proxy_protocol,
    } = old;
    let ClientTimeouts { header, body, idle } = client_timeouts;
    let timeouts = &new.client_timeouts;
    changes.note(HTTPS_LISTEN, https_listen, &new.https_listen);
    changes.note(HTTP_LISTEN, http_listen, &new.http_listen);
    changes.note(EXTERNAL_URL, external_url, &new.external_url);
    changes.note(THREADS, threads, &new.threads);
    changes.note(SHUTDOWN_GRACE, shutdown_grace, &new.shutdown_grace);
    changes.note(PID_FILE, pid_file, &new.pid_file);
    changes.note(HEADER_TIMEOUT, header, &timeouts.header);
    changes.note(BODY_TIMEOUT, body, &timeouts.body);
    changes.note(IDLE_TIMEOUT, idle, &timeouts.idle);
    changes.note(STRICT_HOST, strict_host, &new.strict_host);
    changes.note(PROXY_PROTOCOL, proxy_protocol, &new.proxy_protocol);
}

/// `admin:`: the admin listener's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminSettings {
    /// `admin.listen`: never a port of the public listeners.
    pub listen: SocketAddr,
    /// `admin.public`: whether `listen` may be a non-loopback address.
    pub public: bool,
}

/// The admin address: never a port the public listeners use, and loopback unless the
/// operator set `admin.public` (the admin listener has no authentication).
pub(super) fn admin_settings(
    v: &Validator,
    server: &ServerSettings,
    text: &str,
    public: bool,
) -> Result<AdminSettings, ConfigError> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        v.invalid(
            "admin.listen",
            format!("{text:?} is not an IP:port address"),
        )
    })?;
    let mut listeners = server.https_listen.iter().chain(&server.http_listen);
    if let Some(clash) = listeners.find(|p| p.port() == addr.port()) {
        return Err(v.invalid(
            "admin.listen",
            format!("{addr} shares its port with the public listener {clash}"),
        ));
    }
    if !public && !addr.ip().is_loopback() {
        return Err(v.invalid(
            "admin.listen",
            format!(
                "{addr} is not a loopback address: the admin listener has no authentication; \
                 set `admin.public: true` to serve it there anyway"
            ),
        ));
    }
    Ok(AdminSettings {
        listen: addr,
        public,
    })
}

pub(super) fn client_timeouts(
    v: &Validator,
    header: Option<String>,
    body: Option<String>,
    idle: Option<String>,
) -> Result<ClientTimeouts, ConfigError> {
    let defaults = ClientTimeouts::default();
    let positive = |key: &str, value: Option<String>, default: Duration| {
        let d = v.duration(key, value.as_deref(), default)?;
        if d < Duration::from_secs(1) {
            return Err(v.invalid(key, "must be at least 1s"));
        }
        Ok(d)
    };
    Ok(ClientTimeouts {
        header: positive("server.header_timeout", header, defaults.header)?,
        body: positive("server.body_timeout", body, defaults.body)?,
        idle: positive("server.idle_timeout", idle, defaults.idle)?,
    })
}

pub(super) fn parse_external_url(v: &Validator, text: &str) -> Result<ExternalUrl, ConfigError> {
    let key = "server.external_url";
    let url = url::Url::parse(text)
        .map_err(|e| v.invalid(key, format!("{text:?} is not a URL ({e})")))?;
    if url.scheme() != "https" {
        return Err(v.invalid(key, format!("{text:?} must start with https://")));
    }
    let host = url
        .host_str()
        .ok_or_else(|| v.invalid(key, format!("{text:?} has no host")))?;
    if url.path() != "/" || url.query().is_some() {
        return Err(v.invalid(key, format!("{text:?} must not have a path or query")));
    }
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    Ok(ExternalUrl { authority })
}

/// Notes which `admin` keys differ between `old` and `new`.
pub(super) fn admin_changes(
    old: &Option<AdminSettings>,
    new: &Option<AdminSettings>,
    changes: &mut Changes,
) {
    let listen = |a: &Option<AdminSettings>| a.map(|a| a.listen);
    let public = |a: &Option<AdminSettings>| a.map(|a| a.public);
    changes.note(ADMIN_LISTEN, &listen(old), &listen(new));
    changes.note(ADMIN_PUBLIC, &public(old), &public(new));
}
