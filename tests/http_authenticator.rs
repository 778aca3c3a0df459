//! `auth.users.http`: an external authenticator the edge asks with a JSON POST. The
//! authenticator here is a small stand-in (no packaged server speaks this protocol, and
//! the test must see exactly what the edge sends): it accepts, refuses, fails and stalls
//! by user name, and records every request.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::auth::{auth_yaml_with, error_code, granted, login};
use common::{edge_with_node, Checks};
use serde_json::Value;

/// The stand-in authenticator: a thread per connection, one request each.
struct Authenticator {
    port: u16,
    /// Every request's (content type, JSON body), in order.
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Authenticator {
    fn start() -> Authenticator {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        // Lives as long as the test process; it holds no files and no other process.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let record = record.clone();
                std::thread::spawn(move || answer(stream, &record));
            }
        });
        Authenticator { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/registry-login", self.port)
    }
}

/// Reads one POST and answers by the user it names: `ok` and `grouped` are accepted
/// (the latter with groups), `refused` gets 401, `forbidden` 403, `broken` 500, `garbled`
/// a 200 that is not JSON, `stalled` no answer within the edge's timeout.
fn answer(stream: TcpStream, record: &Mutex<Vec<(String, Value)>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let (mut length, mut content_type) = (0, String::new());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "content-type" => content_type = value.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record.lock().unwrap().push((content_type, json.clone()));
    let (status, reply) = match json["user"].as_str().unwrap_or("") {
        "ok" => ("200 OK", ""),
        "grouped" => ("200 OK", r#"{"groups": ["platform", "qa"]}"#),
        "refused" => ("401 Unauthorized", ""),
        "forbidden" => ("403 Forbidden", ""),
        "garbled" => ("200 OK", "<html>welcome</html>"),
        "stalled" => {
            // The authenticator's own slowness, not synchronisation: the edge gives up first.
            std::thread::sleep(Duration::from_secs(3));
            ("200 OK", "")
        }
        _ => ("500 Internal Server Error", "oops"),
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
}

#[test]
fn edge_asks_the_http_authenticator_and_maps_its_answers() {
    let authenticator = Authenticator::start();
    let dir = tempfile::tempdir().unwrap();
    let users = format!(
        "    http:\n      url: {}\n      timeout: 1s\n",
        authenticator.url()
    );
    let auth = auth_yaml_with(
        dir.path(),
        &users,
        &[
            r#"{ group: platform, name: "platform/**", actions: ["*"] }"#,
            r#"{ account: "*", name: "${account}/**", actions: [pull, push] }"#,
        ],
    );
    let admin = common::free_port();
    let auth = format!("{auth}admin:\n  listen: \"127.0.0.1:{admin}\"\n");
    let (certs, _registry, edge) = edge_with_node(dir.path(), &auth);
    let ca = certs.ca_dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    let scope = "repository:platform/app:pull,push";

    let mut checks = Checks::new();
    checks.run("200 accepts; its groups reach the ACL", || {
        let answer = login(&edge, ca, "grouped", "pw-grouped", scope);
        assert_eq!(answer.status, 200, "{}", answer.text());
        let pull_push = vec!["pull".to_string(), "push".to_string()];
        assert_eq!(
            granted(&answer),
            [("repository:platform/app".to_string(), pull_push)]
        );
        let plain = login(&edge, ca, "ok", "pw-ok", scope);
        assert_eq!(plain.status, 200, "{}", plain.text());
        assert!(granted(&plain).is_empty(), "no groups, no platform/**");
    });
    checks.run(
        "the edge sends user, password and client_ip as JSON",
        || {
            let seen = authenticator.seen.lock().unwrap();
            let (content_type, body) = seen
                .iter()
                .find(|(_, body)| body["user"] == "grouped")
                .expect("the authenticator was asked");
            assert_eq!(content_type, "application/json");
            assert_eq!(body["password"], "pw-grouped");
            assert_eq!(body["client_ip"], "127.0.0.1");
        },
    );
    checks.run("401 and 403 refuse (401 at the realm)", || {
        for user in ["refused", "forbidden"] {
            let answer = login(&edge, ca, user, "pw", scope);
            assert_eq!(answer.status, 401, "{user}: {}", answer.text());
            assert_eq!(error_code(&answer), "UNAUTHORIZED");
        }
    });
    checks.run(
        "500, a garbled 200 and a timeout are 503 UNAVAILABLE",
        || {
            for user in ["broken", "garbled", "stalled"] {
                let answer = login(&edge, ca, user, "pw", scope);
                assert_eq!(answer.status, 503, "{user}: {}", answer.text());
                assert_eq!(error_code(&answer), "UNAVAILABLE", "{user}");
            }
            let metrics = common::admin_metrics(admin);
            let unavailable = r#"registry_edge_login_backend_unavailable_total{backend="http"}"#;
            assert_eq!(
                common::metric(&metrics, unavailable),
                Some(3.0),
                "{metrics}"
            );
        },
    );
    checks.run(
        "a correct login is cached: the authenticator is asked once",
        || {
            let asked =
                |seen: &[(String, Value)]| seen.iter().filter(|(_, b)| b["user"] == "ok").count();
            let before = asked(&authenticator.seen.lock().unwrap());
            assert_eq!(login(&edge, ca, "ok", "pw-ok", scope).status, 200);
            assert_eq!(asked(&authenticator.seen.lock().unwrap()), before);
        },
    );
    checks.run("passwords never reach the edge's log", || {
        let log = edge.log_text();
        assert!(
            !log.contains("pw-grouped") && !log.contains("pw-ok"),
            "{log}"
        );
    });
    checks.finish();
}
