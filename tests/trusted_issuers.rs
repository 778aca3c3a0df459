//! `auth.trusted_issuers`: tokens another service issues (here in GitLab's shape: RS256 with
//! a 4096-bit key, `kid` only, no `x5c`) pass the edge and the real registry behind it, which
//! trusts the same certificate; forged, expired, foreign and under-scoped tokens are refused
//! at the edge with a challenge naming the issuer's realm; push limits key on the token's
//! `sub`. In verify-only mode the edge issues nothing.

mod common;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{curl, make_certs, openssl_cert, push_blob, upstream_yaml, Checks, Edge, Registry};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

const ISSUER: &str = "gitlab-issuer";
const SERVICE: &str = "container_registry";
const REALM: &str = "https://gitlab.example.com/jwt/auth";

/// A token issuer's key pair and its certificate, as GitLab keeps them.
struct Issuer {
    certificate: PathBuf,
    key: EncodingKey,
    kid: String,
}

impl Issuer {
    /// An RSA key of `bits` (GitLab uses 4096) and a self-signed certificate for it.
    fn new(dir: &Path, name: &str, bits: &str) -> Issuer {
        registry_edge::auth::token::jwt_crypto::install();
        let (certificate, key) = openssl_cert(dir, name, &["genrsa", bits]);
        let der = CertificateDer::from_pem_file(&certificate).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let kid = registry_edge::auth::token::libtrust_key_id(cert.public_key().raw);
        let key = EncodingKey::from_rsa_pem(&std::fs::read(key).unwrap()).unwrap();
        Issuer {
            certificate,
            key,
            kid,
        }
    }

    /// A token in GitLab's shape: `{kid, typ: JWT}` RS256, `nbf` = iat − 5 s.
    fn token(&self, claims: Claims) -> String {
        self.sign(&claims.json())
    }

    /// Signs any claims object, in GitLab's header shape.
    fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

/// What a token says; built from [`Claims::new`] and changed per case.
#[derive(Clone)]
struct Claims {
    iss: &'static str,
    aud: &'static str,
    sub: &'static str,
    /// Seconds from now.
    exp_in: i64,
    access: Vec<(&'static str, Vec<&'static str>)>,
}

impl Claims {
    fn new(sub: &'static str, repository: &'static str, actions: &[&'static str]) -> Claims {
        Claims {
            iss: ISSUER,
            aud: SERVICE,
            sub,
            exp_in: 300,
            access: vec![(repository, actions.to_vec())],
        }
    }

    fn json(&self) -> serde_json::Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let access: Vec<serde_json::Value> = self
            .access
            .iter()
            .map(|(name, actions)| {
                serde_json::json!({"type": "repository", "name": name, "actions": actions})
            })
            .collect();
        serde_json::json!({
            "iss": self.iss, "aud": self.aud, "sub": self.sub,
            "iat": now, "nbf": now - 5, "exp": now + self.exp_in,
            "jti": format!("{}-{now}", self.sub), "access": access,
        })
    }
}

/// The registry, trusting `bundle` as GitLab's registry trusts GitLab's certificate.
fn registry(dir: &Path, bundle: &Path) -> Registry {
    let auth = format!(
        "auth:\n  token:\n    realm: {REALM}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    \
         rootcertbundle: {}\n",
        bundle.display()
    );
    Registry::start_with(dir, "registry", &auth)
}

/// What `registry-edge registry-config` prints for the edge's config (it must succeed).
fn registry_config(edge: &Edge) -> String {
    let out = std::process::Command::new(common::EDGE_BIN)
        .args(["registry-config", "--config"])
        .arg(&edge.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// `curl` through the edge with `token`, returning (status, WWW-Authenticate).
fn request(edge: &Edge, ca: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let url = edge.url(path);
    let header = token.map(bearer);
    let mut args = vec!["--cacert", ca, url.as_str()];
    match method {
        "HEAD" => args.push("-I"),
        _ => args.extend(["-X", method]),
    }
    if let Some(header) = &header {
        args.extend(["-H", header.as_str()]);
    }
    let result = curl(&args);
    let challenge = result.header("www-authenticate").unwrap_or("").to_string();
    (result.status, challenge)
}

#[test]
fn verify_only_mode_accepts_the_issuers_tokens_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let gitlab = Issuer::new(dir.path(), "gitlab-registry", "4096");
    let stranger = Issuer::new(dir.path(), "stranger", "2048");
    let registry = registry(dir.path(), &gitlab.certificate);
    let extra = format!(
        "auth:\n  trusted_issuers:\n    - issuer: {ISSUER}\n      service: {SERVICE}\n      \
         certificates: {}\n      realm: {REALM}\n\
         rate_limits:\n  push: {{ per_minute: 1, key: account }}\n",
        gitlab.certificate.display()
    );
    let edge = Edge::start(
        dir.path(),
        &certs,
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        &extra,
    );
    let ca = certs.ca_dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    let alice = gitlab.token(Claims::new("alice", "alice/app", &["pull", "push"]));

    let mut checks = Checks::new();
    checks.run("the registry itself wants the issuer's tokens", || {
        let direct = format!("http://{}/v2/", registry.addr());
        assert_eq!(curl(&[direct.as_str()]).status, 401);
        let header = bearer(&alice);
        let with_token = curl(&["-H", header.as_str(), direct.as_str()]).status;
        assert_eq!(
            with_token, 200,
            "a kid-only RS256 4096 token passes distribution"
        );
    });
    checks.run(
        "a GitLab-shaped token passes the edge and the registry",
        || {
            assert_eq!(request(&edge, ca, "GET", "/v2/", Some(&alice)).0, 200);
            let digest = push_blob(
                &edge.url(""),
                &certs.ca_dir.join("ca.crt"),
                "alice/app",
                b"layer from a GitLab CI job",
                &["-H", &bearer(&alice)],
            );
            let path = format!("/v2/alice/app/blobs/{digest}");
            // Answered by the registry: it accepted the token too.
            assert_eq!(request(&edge, ca, "HEAD", &path, Some(&alice)).0, 200);
        },
    );
    checks.run(
        "no token: 401 naming the issuer's realm and service",
        || {
            let (status, challenge) = request(&edge, ca, "GET", "/v2/alice/app/tags/list", None);
            assert_eq!(status, 401);
            assert!(
                challenge.contains(&format!("realm=\"{REALM}\"")),
                "{challenge}"
            );
            assert!(
                challenge.contains(&format!("service=\"{SERVICE}\"")),
                "{challenge}"
            );
            assert!(
                challenge.contains("scope=\"repository:alice/app:pull\""),
                "{challenge}"
            );
        },
    );
    // The stranger's signature under GitLab's kid: the key lookup succeeds, the signature
    // check must not.
    let forged_kid = Issuer {
        certificate: stranger.certificate.clone(),
        key: stranger.key.clone(),
        kid: gitlab.kid.clone(),
    }
    .token(Claims::new("alice", "alice/app", &["pull"]));
    let expired = gitlab.token(Claims {
        exp_in: -120,
        ..Claims::new("alice", "alice/app", &["pull"])
    });
    let other_issuer = gitlab.token(Claims {
        iss: "someone-else",
        ..Claims::new("alice", "alice/app", &["pull"])
    });
    let other_service = gitlab.token(Claims {
        aud: "another-registry",
        ..Claims::new("alice", "alice/app", &["pull"])
    });
    let unsigned = {
        let claims = Claims::new("alice", "alice/app", &["pull"]).json();
        let b64 = |v: &serde_json::Value| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": gitlab.kid});
        format!("{}.{}.", b64(&header), b64(&claims))
    };
    let refused = [
        (
            "another key's token",
            stranger.token(Claims::new("alice", "alice/app", &["pull"])),
        ),
        ("another key under GitLab's kid", forged_kid),
        ("an expired token (past the 60 s leeway)", expired),
        ("another issuer", other_issuer),
        ("another service", other_service),
        ("alg: none", unsigned),
    ];
    for (case, token) in refused {
        checks.run(case, || {
            let (status, challenge) =
                request(&edge, ca, "GET", "/v2/alice/app/tags/list", Some(&token));
            assert_eq!(status, 401);
            assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
            assert!(
                challenge.contains(&format!("realm=\"{REALM}\"")),
                "{challenge}"
            );
        });
    }
    checks.run(
        "a deploy-token shape (no sub, jti, nbf, iat) passes as anonymous",
        || {
            // GitLab drops empty fields: deploy tokens and anonymous pulls carry no `sub`.
            let mut claims = Claims::new("", "alice/app", &["pull"]).json();
            for absent in ["sub", "jti", "nbf", "iat"] {
                claims.as_object_mut().unwrap().remove(absent);
            }
            let token = gitlab.sign(&claims);
            let (status, challenge) =
                request(&edge, ca, "GET", "/v2/alice/app/tags/list", Some(&token));
            // The registry answers (no tags yet: 404), so both accepted the token.
            assert!(matches!(status, 200 | 404), "{status} {challenge}");
        },
    );
    checks.run(
        "times past int64 are refused, as the registry refuses them",
        || {
            let mut claims = Claims::new("alice", "alice/app", &["pull"]).json();
            claims["exp"] = serde_json::json!(u64::MAX);
            let token = gitlab.sign(&claims);
            let (status, _) = request(&edge, ca, "GET", "/v2/alice/app/tags/list", Some(&token));
            assert_eq!(status, 401);
        },
    );
    checks.run(
        "a valid token without the scope: insufficient_scope",
        || {
            let bob = gitlab.token(Claims::new("bob", "bob/app", &["pull", "push"]));
            let (status, challenge) =
                request(&edge, ca, "GET", "/v2/alice/app/tags/list", Some(&bob));
            assert_eq!(status, 401);
            assert!(
                challenge.contains("error=\"insufficient_scope\""),
                "{challenge}"
            );
        },
    );
    checks.run("push limits key on the token's sub", || {
        let carol = gitlab.token(Claims::new("carol", "carol/app", &["pull", "push"]));
        let dave = gitlab.token(Claims::new("dave", "dave/app", &["pull", "push"]));
        let start = |repo: &str, token: &str| {
            request(
                &edge,
                ca,
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                Some(token),
            )
            .0
        };
        assert_eq!(
            start("carol/app", &carol),
            202,
            "the registry accepts the token"
        );
        assert_eq!(
            start("carol/app", &carol),
            429,
            "carol's budget is one per minute"
        );
        assert_eq!(start("dave/app", &dave), 202, "dave has his own budget");
    });
    checks.run(
        "the edge issues nothing: its realm path goes to the registry",
        || {
            let status = curl(&["--cacert", ca, &edge.url("/jwt/auth?service=x")]).status;
            assert_eq!(status, 404);
        },
    );
    checks.run(
        "registry-config names the issuer's realm and bundle",
        || {
            let text = registry_config(&edge);
            assert!(text.contains(&format!("realm: {REALM}")), "{text}");
            assert!(text.contains(&format!("issuer: {ISSUER}")), "{text}");
            let bundle = std::fs::canonicalize(&gitlab.certificate).unwrap();
            assert!(text.contains(&bundle.display().to_string()), "{text}");
        },
    );
    checks.finish();
}

#[test]
fn with_its_own_realm_the_edge_accepts_either_issuers_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let gitlab = Issuer::new(dir.path(), "gitlab-registry", "2048");
    // The registry trusts both signers in one bundle, as registry-config tells operators.
    let bundle = dir.path().join("bundle.crt");
    let own = dir.path().join("certs/registry-auth.crt");
    let both = std::fs::read_to_string(&own).unwrap()
        + &std::fs::read_to_string(&gitlab.certificate).unwrap();
    std::fs::write(&bundle, both).unwrap();
    let registry = registry(dir.path(), &bundle);
    let htpasswd = common::auth::htpasswd(dir.path());
    let extra = format!(
        "auth:\n  token:\n    service: {SERVICE}\n    issuer: {ISSUER}\n    signing_key: {}\n    \
         certificate: {}\n  users:\n    htpasswd: {}\n  acl:\n    \
         - {{ account: \"*\", name: \"${{account}}/**\", actions: [pull, push] }}\n  \
         trusted_issuers:\n    - issuer: {ISSUER}\n      service: {SERVICE}\n      \
         certificates: {}\n      realm: {REALM}\n",
        dir.path().join("certs/registry-auth.key").display(),
        own.display(),
        htpasswd.display(),
        gitlab.certificate.display()
    );
    let edge = Edge::start(
        dir.path(),
        &certs,
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        &extra,
    );
    let ca = certs.ca_dir.join("ca.crt");
    let ca = ca.to_str().unwrap();

    let mut checks = Checks::new();
    checks.run("a token from the edge's realm passes", || {
        let url = format!(
            "{}?service={SERVICE}&scope=repository:alice/app:pull,push",
            edge.url("/jwt/auth")
        );
        let reply = curl(&["--cacert", ca, "-u", "alice:pw-alice", &url]);
        assert_eq!(reply.status, 200);
        let token = reply.json()["token"].as_str().unwrap().to_string();
        let path = "/v2/alice/app/blobs/uploads/";
        assert_eq!(request(&edge, ca, "POST", path, Some(&token)).0, 202);
    });
    checks.run("a token from the trusted issuer passes", || {
        let token = gitlab.token(Claims::new("bob", "bob/app", &["pull", "push"]));
        let path = "/v2/bob/app/blobs/uploads/";
        assert_eq!(request(&edge, ca, "POST", path, Some(&token)).0, 202);
    });
    checks.run("refusals name the edge's own realm", || {
        let (status, challenge) = request(&edge, ca, "GET", "/v2/bob/app/tags/list", None);
        assert_eq!(status, 401);
        assert!(challenge.contains("/jwt/auth\""), "{challenge}");
        assert!(!challenge.contains(REALM), "{challenge}");
    });
    checks.run(
        "registry-config asks for both certificates in the bundle",
        || {
            let text = registry_config(&edge);
            for cert in [&own, &gitlab.certificate] {
                let cert = std::fs::canonicalize(cert).unwrap();
                assert!(text.contains(&cert.display().to_string()), "{text}");
            }
        },
    );
    checks.finish();
}
