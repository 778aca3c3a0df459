//! Token auth at the edge, against the real registry configured for token auth
//! (its rootcertbundle is the edge's signing certificate) and real clients.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine;
use common::{curl, make_certs, skopeo, skopeo_push, Certs, Checks, Edge, Registry};
use registry_edge::auth::token::{SigningKeys, TokenAuthority};
use registry_edge::registry::Scope;

use common::auth::{auth_yaml, edge_with_token_node, ISSUER, SERVICE};

struct Setup {
    dir: tempfile::TempDir,
    certs: Certs,
    /// `None` when the edge fronts an echo upstream instead.
    registry: Option<Registry>,
    edge: Edge,
}

impl Setup {
    fn start(auth_extra: &str, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (certs, registry, edge) = edge_with_token_node(
            dir.path(),
            &format!("{}{extra}", auth_yaml(dir.path(), auth_extra)),
        );
        Setup {
            dir,
            certs,
            registry: Some(registry),
            edge,
        }
    }

    fn ca(&self) -> String {
        self.certs
            .ca_dir
            .join("ca.crt")
            .to_str()
            .unwrap()
            .to_string()
    }

    /// GET on the realm; `scopes` are sent as repeated `scope` parameters.
    fn token(
        &self,
        creds: Option<(&str, &str)>,
        scopes: &[&str],
        extra: &[&str],
    ) -> common::CurlResult {
        let mut url = format!("{}?service={SERVICE}", self.edge.url("/jwt/auth"));
        for scope in scopes {
            url.push_str(&format!("&scope={}", scope.replace(' ', "%20")));
        }
        let ca = self.ca();
        let user = creds.map(|(u, p)| format!("{u}:{p}"));
        let mut args = vec!["--cacert", ca.as_str()];
        if let Some(user) = &user {
            args.extend(["-u", user.as_str()]);
        }
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    }

    fn token_for(&self, creds: Option<(&str, &str)>, scopes: &[&str]) -> String {
        let r = self.token(creds, scopes, &[]);
        assert_eq!(
            r.status,
            200,
            "token request: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()["token"].as_str().unwrap().to_string()
    }

    fn with_token(&self, token: &str, args: &[&str]) -> common::CurlResult {
        let ca = self.ca();
        let bearer = format!("Authorization: Bearer {token}");
        let mut all = vec!["--cacert", ca.as_str(), "-H", bearer.as_str()];
        all.extend_from_slice(args);
        curl(&all)
    }

    /// Signs any header and claims with the edge's own ES256 key, as an attacker holding
    /// a valid signature but free to choose the rest would.
    fn sign_with_our_key(
        &self,
        header: &jsonwebtoken::Header,
        claims: &serde_json::Value,
    ) -> String {
        registry_edge::auth::token::jwt_crypto::install();
        let key_pem = std::fs::read(self.dir.path().join("certs/registry-auth.key")).unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(&key_pem).unwrap();
        jsonwebtoken::encode(header, claims, &key).unwrap()
    }

    fn signing_keys(&self) -> SigningKeys {
        let dir = self.dir.path().join("certs");
        SigningKeys::load(
            &dir.join("registry-auth.key"),
            &dir.join("registry-auth.crt"),
        )
        .unwrap()
    }
}

fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// One registry and edge; each behaviour below is a part of its own, so one failure does
/// not hide the others.
#[test]
fn skopeo_push_pull_with_credentials_and_anonymous_public_pulls() {
    let s = Setup::start("", "");
    let layout = common::tiny_oci_layout(&s.dir.path().join("image"));
    let certs = s.certs.ca_dir.to_str().unwrap();
    let target = |repo: &str| format!("docker://127.0.0.1:{}/{repo}:v1", s.edge.https_port);
    let registry_tags = format!(
        "http://{}/v2/alice/app/tags/list",
        s.registry.as_ref().unwrap().addr()
    );

    // Alice's image: the parts below read it.
    let out = skopeo_push(
        certs,
        Some("alice:pw-alice"),
        &layout,
        &target("alice/app"),
        &[],
    );
    assert!(
        out.status.success(),
        "alice pushes to alice/: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut checks = Checks::new();
    checks.run("alice pulls her repository", || {
        let pulled = s.dir.path().join("pulled");
        let out = skopeo(&[
            "copy",
            "--src-cert-dir",
            certs,
            "--src-creds",
            "alice:pw-alice",
            &target("alice/app"),
            &format!("oci:{}:v1", pulled.display()),
        ]);
        assert!(
            out.status.success(),
            "alice pulls: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });

    // The registry itself accepts the edge's tokens (kid/x5c against its rootcertbundle).
    let token = checks.run("the registry accepts the edge's token", || {
        let token = s.token_for(Some(("alice", "pw-alice")), &["repository:alice/app:pull"]);
        let direct = curl(&[
            "-H",
            &format!("Authorization: Bearer {token}"),
            &registry_tags,
        ]);
        assert_eq!(
            direct.status,
            200,
            "registry accepted the token: {}",
            String::from_utf8_lossy(&direct.body)
        );
        token
    });

    // The same claims signed with only the libtrust `kid` (no x5c): distribution 2.8 then
    // finds the key by kid among its bundle's certificates, so this proves the kid format.
    if let Some(token) = token {
        checks.run("the registry finds the signing key by kid alone", || {
            let header = jsonwebtoken::decode_header(&token).unwrap();
            let mut kid_only = jsonwebtoken::Header::new(header.alg);
            kid_only.typ = header.typ.clone();
            kid_only.kid = header.kid.clone();
            let kid_token = s.sign_with_our_key(&kid_only, &claims(&token));
            let by_kid = curl(&[
                "-H",
                &format!("Authorization: Bearer {kid_token}"),
                &registry_tags,
            ]);
            assert_eq!(
                by_kid.status,
                200,
                "registry found the key by kid: {}",
                String::from_utf8_lossy(&by_kid.body)
            );
        });
    }

    checks.run("the registry really checks tokens", || {
        let unauthenticated = curl(&[&registry_tags]);
        assert_eq!(
            unauthenticated.status, 401,
            "the registry really checks tokens"
        );
    });

    checks.run("bob cannot read alice's repository", || {
        let out = skopeo(&[
            "inspect",
            "--cert-dir",
            certs,
            "--creds",
            "bob:pw-bob",
            &target("alice/app"),
        ]);
        assert!(!out.status.success(), "bob must not read alice/app");
    });

    checks.run("anonymous pulls of public/* work", || {
        let out = skopeo_push(
            certs,
            Some("admin:pw-admin"),
            &layout,
            &target("public/base"),
            &[],
        );
        assert!(
            out.status.success(),
            "admin pushes public/base: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = skopeo(&[
            "inspect",
            "--cert-dir",
            certs,
            "--no-creds",
            &target("public/base"),
        ]);
        assert!(
            out.status.success(),
            "anonymous pull of public/*: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });

    checks.run("anonymous pushes fail", || {
        let out = skopeo_push(certs, None, &layout, &target("public/other"), &[]);
        assert!(!out.status.success(), "anonymous push must fail");
    });

    checks.run("an anonymous upload gets the registry's Bearer challenge", || {
        let ca = s.ca();
        let anon_push = curl(&[
            "--cacert",
            &ca,
            "-X",
            "POST",
            &s.edge.url("/v2/public/other/blobs/uploads/"),
        ]);
        assert_eq!(anon_push.status, 401);
        let challenge = anon_push.header("www-authenticate").unwrap();
        let realm = s.edge.url("/jwt/auth");
        assert_eq!(
            challenge,
            format!("Bearer realm=\"{realm}\",service=\"{SERVICE}\",scope=\"repository:public/other:pull,push\"")
        );
        assert_eq!(anon_push.json()["errors"][0]["code"], "UNAUTHORIZED");
        assert_eq!(
            anon_push.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
    });
    checks.finish();
}

#[test]
fn under_scoped_and_bad_tokens_never_reach_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, upstream, edge) = common::echo::echo_edge(dir.path(), &auth_yaml(dir.path(), ""));
    let s = Setup {
        registry: None,
        dir,
        certs,
        edge,
    };

    let mut checks = Checks::new();
    // Alice asks for push on bob/app: granted nothing, so the token lacks push.
    checks.run("an under-scoped token gets insufficient_scope", || {
        let token = s.token_for(
            Some(("alice", "pw-alice")),
            &["repository:bob/app:pull,push"],
        );
        assert_eq!(claims(&token)["access"], serde_json::json!([]));
        let denied = s.with_token(
            &token,
            &["-X", "POST", &s.edge.url("/v2/bob/app/blobs/uploads/")],
        );
        assert_eq!(denied.status, 401);
        assert!(denied
            .header("www-authenticate")
            .unwrap()
            .ends_with(",error=\"insufficient_scope\""));
        let detail = &denied.json()["errors"][0]["detail"];
        assert_eq!(
            detail[0],
            serde_json::json!({"Type": "repository", "Name": "bob/app", "Action": "pull"})
        );
    });

    let keys = s.signing_keys();
    let now = SystemTime::now();
    let scope = [Scope::repository("alice/app", &["pull"])];
    let good = TokenAuthority::new(
        keys.clone(),
        ISSUER.into(),
        SERVICE.into(),
        Duration::from_secs(300),
    )
    .issue("alice", &scope, now)
    .token;
    let expired = TokenAuthority::new(
        keys.clone(),
        ISSUER.into(),
        SERVICE.into(),
        Duration::from_secs(60),
    )
    .issue("alice", &scope, now - Duration::from_secs(3600))
    .token;
    let other_audience = TokenAuthority::new(
        keys.clone(),
        ISSUER.into(),
        "other_service".into(),
        Duration::from_secs(300),
    )
    .issue("alice", &scope, now)
    .token;
    let other_issuer = TokenAuthority::new(
        keys,
        "someone-else".into(),
        SERVICE.into(),
        Duration::from_secs(300),
    )
    .issue("alice", &scope, now)
    .token;
    let mut flipped = good.clone().into_bytes();
    let at = flipped.len() - 5;
    flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = good.split('.').nth(1).unwrap();
    let alg_none = format!(
        "{}.{payload}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#)
    );
    let public_pem = std::fs::read(s.dir.path().join("certs/registry-auth.crt")).unwrap();
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(&good),
        &jsonwebtoken::EncodingKey::from_secret(&public_pem),
    )
    .unwrap();

    // Hostile shapes (issue 7): some unsigned, some signed with our own key so that only
    // the claim types or the key hints are wrong.
    let good_header = jsonwebtoken::decode_header(&good).unwrap();
    let sign = |header: &jsonwebtoken::Header, claims: &serde_json::Value| {
        s.sign_with_our_key(header, claims)
    };
    let good_sig = good.rsplit('.').next().unwrap();
    let bad_base64 = format!("eyJhbGciOiJFUzI1NiJ9.!!!$$.{good_sig}");
    let huge_header = format!(
        "{}.{payload}.{good_sig}",
        b64.encode(format!(
            r#"{{"alg":"ES256","pad":"{}"}}"#,
            "A".repeat(16 * 1024)
        ))
    );
    let deep_header = format!(
        "{}.{payload}.{good_sig}",
        b64.encode(format!(
            r#"{{"alg":"ES256","x":{}{}}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        ))
    );
    let mut string_exp = claims(&good);
    string_exp["exp"] = serde_json::json!("tomorrow");
    let string_exp = sign(&good_header, &string_exp);
    let mut number_aud = claims(&good);
    number_aud["aud"] = serde_json::json!(123);
    let number_aud = sign(&good_header, &number_aud);
    let mut kid_nowhere = good_header.clone();
    kid_nowhere.x5c = None;
    kid_nowhere.kid = Some("AAAA:BBBB:CCCC:DDDD:EEEE:FFFF:GGGG:HHHH:IIII:JJJJ:KKKK:LLLL".into());
    let kid_nowhere = sign(&kid_nowhere, &claims(&good));
    let other_dir = s.dir.path().join("other-key");
    registry_edge::certgen::generate(&other_dir, &["other".into()]).unwrap();
    let other_cert_pem = std::fs::read_to_string(other_dir.join("registry-auth.crt")).unwrap();
    let other_cert_b64: String = other_cert_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let mut foreign_x5c = good_header.clone();
    foreign_x5c.x5c = Some(vec![other_cert_b64]);
    let foreign_x5c = sign(&foreign_x5c, &claims(&good));
    let mut no_key_hint = good_header.clone();
    no_key_hint.kid = None;
    no_key_hint.x5c = None;
    let no_key_hint = sign(&no_key_hint, &claims(&good));

    let url = s.edge.url("/v2/alice/app/tags/list");
    let ok = s.with_token(&good, &[&url]);
    assert_eq!(ok.status, 200, "the control token passes");
    let passed = upstream.seen.lock().unwrap().len();
    assert_eq!(
        passed, 1,
        "exactly the control request reached the upstream"
    );
    // One part per token, so every shape that gets through is named.
    for (what, token) in [
        ("flipped signature", flipped.as_str()),
        ("expired", expired.as_str()),
        ("other audience", other_audience.as_str()),
        ("other issuer", other_issuer.as_str()),
        ("alg none", alg_none.as_str()),
        ("HS256 with the public key", hs256.as_str()),
        ("garbage", "not-a-jwt"),
        ("bad base64", bad_base64.as_str()),
        ("16 KiB header", huge_header.as_str()),
        ("header nested 5000 deep", deep_header.as_str()),
        ("exp as a string, signed", string_exp.as_str()),
        ("aud as a number, signed", number_aud.as_str()),
        ("kid of no known key, signed", kid_nowhere.as_str()),
        ("x5c of another key, signed", foreign_x5c.as_str()),
        ("neither kid nor x5c, signed", no_key_hint.as_str()),
    ] {
        checks.run(what, || {
            let r = s.with_token(token, &[&url]);
            assert_eq!(r.status, 401, "{what}");
            let challenge = r.header("www-authenticate").unwrap();
            assert!(
                challenge.contains("scope=\"repository:alice/app:pull\""),
                "{what}: {challenge}"
            );
            assert!(
                challenge.ends_with(",error=\"invalid_token\""),
                "{what}: {challenge}"
            );
        });
    }
    checks.run("no refused request reached the upstream", || {
        let seen = upstream.seen.lock().unwrap().len();
        assert_eq!(seen, passed, "no refused request reached the upstream");
    });
    checks.run("tokens are never logged", || {
        assert!(!s.edge.log_text().contains(&good), "tokens never logged");
    });
    checks.finish();
}

/// One registry and edge; each flow of the token endpoint is a part of its own.
#[test]
fn docker_login_oauth2_scopes_catalog_and_service_checks() {
    let s = Setup::start("", "");
    let ca = s.ca();
    let mut checks = Checks::new();

    // docker login: GET /v2/ -> 401 -> token without scope -> GET /v2/ -> 200.
    checks.run("docker login", || {
        let first = curl(&["--cacert", &ca, &s.edge.url("/v2/")]);
        assert_eq!(first.status, 401);
        assert_eq!(
            first.header("www-authenticate"),
            Some(
                format!(
                    "Bearer realm=\"{}\",service=\"{SERVICE}\"",
                    s.edge.url("/jwt/auth")
                )
                .as_str()
            )
        );
        let login = s.token(Some(("alice", "pw-alice")), &[], &[]);
        let login_json = login.json();
        assert_eq!(login.status, 200);
        let token = login_json["token"].as_str().unwrap();
        assert_eq!(login_json["access_token"], login_json["token"]);
        assert!(login_json["expires_in"].as_u64().unwrap() >= 60);
        assert!(login_json["issued_at"].as_str().unwrap().ends_with('Z'));
        assert!(
            login_json.get("refresh_token").is_none(),
            "no refresh token unless asked"
        );
        assert_eq!(claims(token)["access"], serde_json::json!([]));
        assert_eq!(s.with_token(token, &[&s.edge.url("/v2/")]).status, 200);
    });

    // Wrong password / unknown user: 401 with a Basic challenge.
    checks.run("wrong password, unknown user", || {
        for creds in [("alice", "Gu3ss-Zq7"), ("mallory", "Zq9-secret")] {
            let r = s.token(Some(creds), &[], &[]);
            assert_eq!(r.status, 401, "{creds:?}");
            assert!(r
                .header("www-authenticate")
                .unwrap()
                .starts_with("Basic realm="));
            assert_eq!(r.json()["errors"][0]["code"], "UNAUTHORIZED");
            assert!(
                !String::from_utf8_lossy(&r.body).contains(creds.1),
                "password not echoed"
            );
        }
    });

    // Repeated and space-separated scopes; grants are the allowed intersection.
    checks.run("scope intersection", || {
        let t = s.token_for(
            Some(("alice", "pw-alice")),
            &[
                "repository:alice/a:pull",
                "repository:alice/b:pull,push repository:bob/c:pull",
                "repository:BAD:pull",
            ],
        );
        let access = claims(&t)["access"].clone();
        assert_eq!(access.as_array().unwrap().len(), 2, "{access}");
        assert_eq!(
            access[1],
            serde_json::json!({"type": "repository", "name": "alice/b", "actions": ["pull", "push"]})
        );
    });

    // OAuth2 POST: password grant with offline access, then the refresh grant.
    checks.run("OAuth2 grants", || {
        let form = |fields: &[(&str, &str)]| {
            let body: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(fields)
                .finish();
            curl(&[
                "--cacert",
                &ca,
                "-X",
                "POST",
                "-H",
                "Content-Type: application/x-www-form-urlencoded",
                "--data",
                &body,
                &s.edge.url("/jwt/auth"),
            ])
        };
        let password = form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "pw-alice"),
            ("service", SERVICE),
            ("client_id", "containerd-client"),
            ("access_type", "offline"),
            ("scope", "repository:alice/a:pull"),
        ]);
        assert_eq!(
            password.status,
            200,
            "{}",
            String::from_utf8_lossy(&password.body)
        );
        let password_json = password.json();
        let refresh = password_json["refresh_token"]
            .as_str()
            .expect("refresh_token when offline")
            .to_string();
        assert_eq!(password_json["scope"], "repository:alice/a:pull");
        assert!(
            s.with_token(&refresh, &[&s.edge.url("/v2/")]).status == 401,
            "a refresh token is not an access token"
        );
        let refreshed = form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("service", SERVICE),
            ("client_id", "docker"),
            ("scope", "repository:alice/a:pull,push"),
        ]);
        assert_eq!(
            refreshed.status,
            200,
            "{}",
            String::from_utf8_lossy(&refreshed.body)
        );
        let access_token = refreshed.json()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(claims(&access_token)["sub"], "alice");
        let bad_refresh = form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "nope"),
            ("service", SERVICE),
        ]);
        assert_eq!(bad_refresh.status, 401);
    });

    // Catalog only for the admin rule.
    checks.run("catalog", || {
        let admin = s.token_for(Some(("admin", "pw-admin")), &["registry:catalog:*"]);
        assert_eq!(
            s.with_token(&admin, &[&s.edge.url("/v2/_catalog")]).status,
            200
        );
        let alice = s.token_for(Some(("alice", "pw-alice")), &["registry:catalog:*"]);
        let refused = s.with_token(&alice, &[&s.edge.url("/v2/_catalog")]);
        assert_eq!(refused.status, 401);
        assert!(refused
            .header("www-authenticate")
            .unwrap()
            .contains("scope=\"registry:catalog:*\""));
    });

    // The service must match.
    checks.run("service", || {
        let wrong = curl(&[
            "--cacert",
            &ca,
            &format!("{}?service=other", s.edge.url("/jwt/auth")),
        ]);
        assert_eq!(wrong.status, 400);
        assert_eq!(wrong.header("content-type"), Some("application/json"));
    });
    checks.finish();
}

#[test]
fn malformed_basic_headers_are_refused_not_anonymous() {
    let s = Setup::start("", "");
    // Malformed Basic headers (issue 7): refused with the same 401 as a wrong password,
    // never a 500 and never an anonymous token.
    let b64 = base64::engine::general_purpose::STANDARD;
    let long_password = b64.encode(format!("alice:{}", "x".repeat(6000)));
    let malformed = [
        "Basic".to_string(),
        "Basic ".to_string(),
        "Basic !!!not-base64!!!".to_string(),
        format!("Basic {}", b64.encode("no-colon-here")),
        format!("Basic {}", b64.encode(":")),
        format!("Basic {}", b64.encode([0xff, 0xfe, b':', 0xfd])),
        format!("Basic {long_password}"),
        format!("Basic {} trailing", b64.encode("alice:pw-alice")),
    ];
    for header in &malformed {
        let r = s.token(None, &[], &["-H", &format!("Authorization: {header}")]);
        assert_eq!(r.status, 401, "{header:.40}");
        assert_eq!(
            r.json()["errors"][0]["code"],
            "UNAUTHORIZED",
            "{header:.40}"
        );
    }
    let anonymous = s.token(None, &[], &[]);
    assert_eq!(anonymous.status, 200, "no header at all is still anonymous");
}

#[test]
fn failed_logins_are_throttled_per_client() {
    let s = Setup::start(
        "  failed_logins: { per_client_ip: 3, per_account: 100 }\n",
        "forwarded:\n  trusted_proxies: [\"127.0.0.0/8\"]\n",
    );
    let from = |ip: &str| format!("X-Forwarded-For: {ip}");
    let attacker = from("203.0.113.1");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            s.token(Some(("alice", "guess")), &[], &["-H", &attacker])
                .status,
        );
    }
    assert_eq!(&statuses[..3], &[401, 401, 401], "{statuses:?}");
    assert_eq!(statuses[4], 429, "{statuses:?}");
    let blocked = s.token(Some(("alice", "pw-alice")), &[], &["-H", &attacker]);
    assert_eq!(
        blocked.status, 429,
        "a blocked client is refused before bcrypt, even with the right password"
    );
    assert!(
        blocked
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(blocked.json()["errors"][0]["code"], "TOOMANYREQUESTS");
    let other = s.token(
        Some(("alice", "pw-alice")),
        &[],
        &["-H", &from("203.0.113.2")],
    );
    assert_eq!(
        other.status, 200,
        "another client of the same account still logs in"
    );
}

/// An in-process `Auth` over `dir`'s keys and the given htpasswd text.
fn auth_with_users(dir: &Path, htpasswd_text: &str) -> registry_edge::auth::Auth {
    let path = dir.join(format!("htpasswd-{}", htpasswd_text.len()));
    std::fs::write(&path, htpasswd_text).unwrap();
    registry_edge::auth::Auth::load(&registry_edge::config::AuthSettings {
        realm_path: "/jwt/auth".into(),
        service: SERVICE.into(),
        issuer: ISSUER.into(),
        signing_key: dir.join("certs/registry-auth.key"),
        certificate: dir.join("certs/registry-auth.crt"),
        expiration: Duration::from_secs(300),
        refresh_expiration: Duration::from_secs(3600),
        users: registry_edge::config::UsersSettings::htpasswd_only(path, Duration::from_secs(60)),
        acl: Default::default(),
        failed_logins_per_ip: std::num::NonZeroU32::MAX,
        failed_logins_per_account: std::num::NonZeroU32::MAX,
        access_tokens: None,
    })
    .unwrap()
}

#[tokio::test]
async fn removing_a_user_revokes_their_refresh_tokens() {
    use registry_edge::auth::endpoint::{TokenReply, TokenRequest};
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let alice = registry_edge::registry_config::htpasswd_line("alice", "pw-alice", 4).unwrap();
    let bob = registry_edge::registry_config::htpasswd_line("bob", "pw-bob", 4).unwrap();
    let request = |fields: &[(&str, &str)]| TokenRequest {
        post: true,
        params: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        authorization: None,
        client_ip: "127.0.0.1".parse().unwrap(),
    };
    let before = auth_with_users(dir.path(), &format!("{alice}\n{bob}\n"));
    let login = request(&[
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "pw-alice"),
        ("service", SERVICE),
        ("access_type", "offline"),
    ]);
    let TokenReply::Issued { body, .. } =
        before.handle_token_request(&login, SystemTime::now()).await
    else {
        panic!("login refused");
    };
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let refresh = json["refresh_token"].as_str().unwrap().to_string();
    let grant = request(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &refresh),
        ("service", SERVICE),
    ]);
    assert!(matches!(
        before.handle_token_request(&grant, SystemTime::now()).await,
        TokenReply::Issued { .. }
    ));

    // Same signing key, alice removed: her refresh token no longer works.
    let after = auth_with_users(dir.path(), &format!("{bob}\n"));
    assert!(matches!(
        after.handle_token_request(&grant, SystemTime::now()).await,
        TokenReply::Refused { .. }
    ));
}

#[test]
fn rs256_tokens_from_an_rsa_key_are_accepted_by_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = common::openssl_cert(dir.path(), "token-signer", &["genrsa", "2048"]);
    let keys = SigningKeys::load(&key, &crt).unwrap();
    assert_eq!(keys.algorithm(), jsonwebtoken::Algorithm::RS256);
    let registry = Registry::start_with(
        dir.path(),
        "rsa-node",
        &format!(
            "auth:\n  token:\n    realm: https://127.0.0.1:1/jwt/auth\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            crt.display()
        ),
    );
    let authority = TokenAuthority::new(
        keys,
        ISSUER.into(),
        SERVICE.into(),
        Duration::from_secs(300),
    );
    let token = authority
        .issue(
            "alice",
            &[Scope::repository("alice/app", &["pull"])],
            SystemTime::now(),
        )
        .token;
    let url = format!("http://{}/v2/alice/app/tags/list", registry.addr());
    // 404 NAME_UNKNOWN (nothing pushed yet) means the token passed; 401 would mean it did not.
    let with_x5c = curl(&["-H", &format!("Authorization: Bearer {token}"), &url]);
    assert_eq!(
        with_x5c.status,
        404,
        "{}",
        String::from_utf8_lossy(&with_x5c.body)
    );

    let header = jsonwebtoken::decode_header(&token).unwrap();
    let mut kid_only = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    kid_only.typ = header.typ;
    kid_only.kid = header.kid;
    let kid_token = jsonwebtoken::encode(
        &kid_only,
        &claims(&token),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&key).unwrap()).unwrap(),
    )
    .unwrap();
    let by_kid = curl(&["-H", &format!("Authorization: Bearer {kid_token}"), &url]);
    assert_eq!(
        by_kid.status,
        404,
        "{}",
        String::from_utf8_lossy(&by_kid.body)
    );
    let none = curl(&[url.as_str()]);
    assert_eq!(none.status, 401, "the registry does check tokens");
}
