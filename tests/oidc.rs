//! OIDC ID tokens (CI job tokens presented as a password): first the stand-in issuer
//! itself (`common::oidc`), so that the edge's tests stand on an issuer known to publish,
//! sign and rotate as a real one does; then the edge's `auth.users.oidc` in front of the
//! real registry — claims and groups rules, a skopeo push with a job token, every forgery
//! refused, bounded JWKS fetches, key rotation, refresh tokens bounded by the job token.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::oidc::OidcIssuer;
use common::{curl, read_head, tls_over_named, wait_closed};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::io::Write;

/// `GET {issuer}{path}` with curl trusting the issuer's CA: the JSON body (asserting 200).
fn get_json(issuer: &OidcIssuer, path: &str) -> Value {
    let url = format!("{}{path}", issuer.issuer());
    let response = curl(&["--cacert", issuer.ca().to_str().unwrap(), &url]);
    assert_eq!(response.status, 200, "GET {url}: {}", response.stderr);
    assert_eq!(response.http_version, "1.1", "GET {url}");
    response.json()
}

/// The published JWK with `kid`, if any.
fn jwk<'a>(jwks: &'a Value, kid: &str) -> Option<&'a Value> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
}

fn kids(jwks: &Value) -> Vec<String> {
    let keys = jwks["keys"].as_array().unwrap();
    keys.iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// Whether `token` carries a valid RS256 signature by the RSA JWK `jwk`. Checked with ring
/// directly: the library's jsonwebtoken backend takes no modulus/exponent keys.
fn rs256_signed_by(token: &str, jwk: &Value) -> bool {
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let b64 = |field: &str| {
        URL_SAFE_NO_PAD
            .decode(jwk[field].as_str().unwrap())
            .unwrap()
    };
    let public = ring::signature::RsaPublicKeyComponents {
        n: b64("n"),
        e: b64("e"),
    };
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    public
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            signing_input.as_bytes(),
            &signature,
        )
        .is_ok()
}

/// A token's header and claims, read without verifying anything.
fn parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut json = || -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap()
    };
    (json(), json())
}

#[test]
fn oidc_issuer_serves_discovery_and_rotates_keys() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = OidcIssuer::start(dir.path());
    let url = issuer.issuer().to_string();
    assert!(
        url.starts_with("https://127.0.0.1:") && !url.ends_with('/'),
        "{url}"
    );

    let discovery = get_json(&issuer, "/.well-known/openid-configuration");
    assert_eq!(discovery["issuer"], url.as_str());
    assert_eq!(discovery["jwks_uri"], format!("{url}/jwks").as_str());
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256", "ES256"])
    );
    assert_eq!(issuer.discovery_fetches(), 1);
    let missing = curl(&[
        "--cacert",
        issuer.ca().to_str().unwrap(),
        &format!("{url}/nope"),
    ]);
    assert_eq!(missing.status, 404);

    let jwks = get_json(&issuer, "/jwks");
    assert_eq!(issuer.jwks_fetches(), 1);
    let mut published = kids(&jwks);
    published.sort();
    assert_eq!(published, ["ec-1", "rsa-1"]);
    let rsa = jwk(&jwks, "rsa-1").unwrap();
    assert_eq!(
        (&rsa["kty"], &rsa["use"], &rsa["alg"]),
        (&"RSA".into(), &"sig".into(), &"RS256".into())
    );
    assert!(
        !rsa["n"].as_str().unwrap().contains(['=', '+', '/']),
        "base64url, no padding"
    );
    let ec = jwk(&jwks, "ec-1").unwrap();
    assert_eq!(
        (&ec["kty"], &ec["crv"], &ec["alg"]),
        (&"EC".into(), &"P-256".into(), &"ES256".into())
    );

    // RS256 with the published RSA key.
    let claims = issuer.claims(
        "project_path:group/app:ref_type:branch:ref:main",
        "registry-edge",
        300,
    );
    let token = issuer.mint(&claims);
    let (header, body) = parts(&token);
    assert_eq!(
        header,
        serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"})
    );
    assert_eq!(body, claims);
    assert_eq!(body["iss"], url.as_str());
    assert!(
        rs256_signed_by(&token, rsa),
        "mint() verifies against the published rsa-1"
    );

    // ES256 through jsonwebtoken with a DecodingKey built from the published JWK.
    let es_token = issuer.mint_es256(&claims);
    let es_jwk: Jwk = serde_json::from_value(ec.clone()).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[&url]);
    validation.set_audience(&["registry-edge"]);
    let decoded = jsonwebtoken::decode::<Value>(
        &es_token,
        &DecodingKey::from_jwk(&es_jwk).unwrap(),
        &validation,
    )
    .expect("mint_es256() verifies against the published ec-1");
    assert_eq!(decoded.header.kid.as_deref(), Some("ec-1"));
    assert_eq!(decoded.claims, claims);

    // The forgeries: right kid, wrong key or no key.
    let forged = issuer.mint_with_unpublished_key(&claims, "rsa-1");
    assert_eq!(parts(&forged).0["kid"], "rsa-1");
    assert!(
        !rs256_signed_by(&forged, rsa),
        "the unpublished key is not rsa-1"
    );
    let confused = issuer.mint_hs256_with_public_key(&claims);
    assert_eq!(
        parts(&confused).0,
        serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"})
    );
    let unsigned = issuer.mint_alg_none(&claims);
    assert!(
        unsigned.ends_with('.') && unsigned.matches('.').count() == 2,
        "{unsigned}"
    );
    assert_eq!(
        parts(&unsigned),
        (
            serde_json::json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"}),
            claims.clone()
        )
    );

    // Rotation: rsa-2 signs and replaces rsa-1 in the JWKS.
    let fetches = issuer.jwks_fetches();
    assert_eq!(issuer.rotate(), "rsa-2");
    let jwks = get_json(&issuer, "/jwks");
    assert_eq!(issuer.jwks_fetches(), fetches + 1);
    let mut published = kids(&jwks);
    published.sort();
    assert_eq!(published, ["ec-1", "rsa-2"]);
    let rotated = issuer.mint(&claims);
    assert_eq!(parts(&rotated).0["kid"], "rsa-2");
    let rsa2 = jwk(&jwks, "rsa-2").unwrap();
    assert!(rs256_signed_by(&rotated, rsa2));
    assert!(
        !rs256_signed_by(&token, rsa2),
        "the old token is not rsa-2's"
    );
    assert_eq!(issuer.rotate(), "rsa-3");

    // A second issuer: its own port and keys.
    let other = OidcIssuer::start(dir.path());
    assert_ne!(other.issuer(), issuer.issuer());
    let other_jwks = get_json(&other, "/jwks");
    assert_ne!(jwk(&other_jwks, "rsa-1").unwrap()["n"], rsa["n"]);
    assert!(!rs256_signed_by(&other.mint(&claims), rsa2));
    assert_eq!(
        issuer.jwks_fetches(),
        fetches + 1,
        "the other issuer counts its own"
    );

    // rustls (webpki, as the edge verifies) accepts the certificate for the IP; h2 is
    // declined.
    let port = issuer.port();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = tls_over_named(tcp, issuer.ca(), &["h2", "http/1.1"], "127.0.0.1");
    tls.write_all(b"GET /jwks HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let (status, head) = read_head(&mut tls);
    assert_eq!(status, 200, "{head}");
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));

    // Dropped: the port is closed, and so is the connection still open.
    drop(issuer);
    let refused = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(refused.is_err(), "port {port} still accepts after drop");
    let (_, closed) = wait_closed(&mut tls.sock);
    assert!(closed, "a kept-alive connection outlived the issuer");
}

/// The edge's `users:` body trusting `issuer` for login name `ci`, next to htpasswd users,
/// and `untrusted` for `ci2` without its CA; the cache is off so every login is verified again.
fn oidc_users(dir: &std::path::Path, issuer: &OidcIssuer, untrusted: &OidcIssuer) -> String {
    format!(
        "    htpasswd: {htpasswd}\n    cache_ttl: 0s\n    oidc:\n      - issuer: {iss}\n        audience: {AUDIENCE}\n\
         \x20       username: ci\n        account_claim: sub\n        groups_claim: groups\n        ca: {ca}\n\
         \x20     - {{ issuer: \"{other}\", audience: {AUDIENCE}, username: ci2 }}\n",
        htpasswd = common::auth::htpasswd(dir).display(),
        iss = issuer.issuer(),
        ca = issuer.ca().display(),
        other = untrusted.issuer(),
    )
}

const AUDIENCE: &str = "registry.test";

const OIDC_ACL: [&str; 3] = [
    r#"{ claims: { repository: "acme/app" }, name: "${claims.repository}/**", actions: [pull, push] }"#,
    r#"{ group: deployers, name: "deploy/**", actions: [pull] }"#,
    r#"{ account: "*", name: "${account}/**", actions: [pull, push] }"#,
];

/// A GitHub-Actions-like job token's claims: `repository` and `groups` besides the standard ones.
fn job_claims(issuer: &OidcIssuer, exp_in: i64) -> Value {
    let mut claims = issuer.claims("repo:acme/app:ref:refs/heads/main", AUDIENCE, exp_in);
    claims["repository"] = "acme/app".into();
    claims["groups"] = serde_json::json!(["deployers"]);
    claims
}

#[test]
fn edge_accepts_ci_id_tokens_and_refuses_every_forgery() {
    use common::auth::{
        auth_yaml_with, edge_with_token_node, error_code, granted, login, refresh_token_for,
    };
    use common::{skopeo_push, wait_for, Checks};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let issuer = OidcIssuer::start(dir.path());
    let other = OidcIssuer::start(dir.path());
    let (certs, _registry, edge) = edge_with_token_node(
        dir.path(),
        // Many refused job tokens in a row from one client: with 3 failures per account,
        // the shared login name `ci` would be locked out if it were counted as an account.
        &(auth_yaml_with(
            dir.path(),
            &oidc_users(dir.path(), &issuer, &other),
            &OIDC_ACL,
        ) + "  failed_logins: { per_client_ip: 1000, per_account: 3 }\n"),
    );
    let ca = certs.ca_dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    let scope = "repository:acme/app/cache:pull,push&scope=repository:deploy/site:pull,push";
    let expected = || {
        vec![
            (
                "repository:acme/app/cache".to_string(),
                vec!["pull".to_string(), "push".to_string()],
            ),
            (
                "repository:deploy/site".to_string(),
                vec!["pull".to_string()],
            ),
        ]
    };
    let refused = |user: &str, token: &str, what: &str| {
        let answer = login(&edge, ca, user, token, scope);
        assert_eq!(answer.status, 401, "{what}: {}", answer.text());
        assert_eq!(error_code(&answer), "UNAUTHORIZED", "{what}");
    };

    let mut checks = Checks::new();
    checks.run(
        "a valid RS256 job token: claims and groups rules grant",
        || {
            let answer = login(
                &edge,
                ca,
                "ci",
                &issuer.mint(&job_claims(&issuer, 300)),
                scope,
            );
            assert_eq!(answer.status, 200, "{}", answer.text());
            assert_eq!(granted(&answer), expected());
            assert_eq!(issuer.discovery_fetches(), 1);
        },
    );
    checks.run("a valid ES256 job token", || {
        let answer = login(
            &edge,
            ca,
            "ci",
            &issuer.mint_es256(&job_claims(&issuer, 300)),
            scope,
        );
        assert_eq!(granted(&answer), expected(), "{}", answer.text());
    });
    checks.run("skopeo pushes with the job token as password", || {
        let layout = common::tiny_oci_layout(&dir.path().join("image"));
        let creds = format!("ci:{}", issuer.mint(&job_claims(&issuer, 300)));
        let target = format!("docker://127.0.0.1:{}/acme/app/image:v1", edge.https_port);
        let certs_dir = certs.ca_dir.to_str().unwrap();
        let out = skopeo_push(certs_dir, Some(&creds), &layout, &target, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let other_repo = format!("docker://127.0.0.1:{}/acme/other:v1", edge.https_port);
        let out = skopeo_push(certs_dir, Some(&creds), &layout, &other_repo, &[]);
        assert!(
            !out.status.success(),
            "the claims rule covers acme/app/** only"
        );
    });
    checks.run("forged, foreign, expired and future tokens → 401", || {
        let good = job_claims(&issuer, 300);
        let with = |field: &str, value: Value| {
            let mut claims = good.clone();
            claims[field] = value;
            claims
        };
        let now = good["iat"].as_i64().unwrap();
        refused("ci", &issuer.mint_alg_none(&good), "alg none");
        refused(
            "ci",
            &issuer.mint_hs256_with_public_key(&good),
            "HS256 with the public key as secret",
        );
        refused(
            "ci",
            &issuer.mint_with_unpublished_key(&good, "rsa-1"),
            "an unpublished key claiming rsa-1",
        );
        refused(
            "ci",
            &other.mint(&good),
            "another issuer's key, claiming this issuer",
        );
        refused(
            "ci",
            &issuer.mint(&with("exp", (now - 120).into())),
            "expired beyond the leeway",
        );
        refused(
            "ci",
            &issuer.mint(&with("nbf", (now + 300).into())),
            "not valid yet",
        );
        refused(
            "ci",
            &issuer.mint(&with("iat", (now + 300).into())),
            "issued in the future",
        );
        refused(
            "ci",
            &issuer.mint(&with("aud", "someone-else".into())),
            "another audience",
        );
        refused(
            "ci",
            &other.mint(&other.claims("x", AUDIENCE, 300)),
            "another configured issuer's token under this login name",
        );
        refused(
            "alice",
            &issuer.mint(&good),
            "a job token under another login name",
        );
        refused(
            "ci",
            "not-a-token",
            "a plain password for the OIDC login name",
        );
    });
    checks.run(
        "an issuer whose certificate the edge does not trust → 503, not 401",
        || {
            let answer = login(
                &edge,
                ca,
                "ci2",
                &other.mint(&other.claims("x", AUDIENCE, 300)),
                scope,
            );
            assert_eq!(answer.status, 503, "{}", answer.text());
            assert_eq!(error_code(&answer), "UNAVAILABLE");
            assert_eq!(
                other.jwks_fetches() + other.discovery_fetches(),
                0,
                "TLS failed before HTTP"
            );
        },
    );
    checks.run(
        "unknown kids do not make the edge hammer the issuer",
        || {
            let before = issuer.jwks_fetches();
            for n in 0..5 {
                refused(
                    "ci",
                    &issuer.mint_with_unpublished_key(
                        &job_claims(&issuer, 300),
                        &format!("forged-{n}"),
                    ),
                    "forged kid",
                );
            }
            assert!(
                issuer.jwks_fetches() <= before + 1,
                "{} fetches after {before}",
                issuer.jwks_fetches()
            );
        },
    );
    checks.run(
        "a rotated key is picked up (at most one JWKS fetch per 30 s)",
        || {
            let old = issuer.mint(&job_claims(&issuer, 300));
            issuer.rotate();
            let before = issuer.jwks_fetches();
            let fresh = issuer.mint(&job_claims(&issuer, 300));
            wait_for(
                "the rotated key to be accepted",
                Duration::from_secs(45),
                || (login(&edge, ca, "ci", &fresh, scope).status == 200).then_some(()),
            );
            assert_eq!(issuer.jwks_fetches(), before + 1);
            refused("ci", &old, "a token of the key the issuer withdrew");
        },
    );
    checks.run(
        "a job token's refresh token ends with the job token (plus the 60 s leeway)",
        || {
            let claims = job_claims(&issuer, 120);
            let exp = claims["exp"].as_u64().unwrap();
            let token =
                refresh_token_for(&edge, ca, "ci", &issuer.mint(&claims)).expect("a refresh token");
            let payload = URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap();
            let refresh: Value = serde_json::from_slice(&payload).unwrap();
            assert!(refresh["exp"].as_u64().unwrap() <= exp + 60, "{refresh}");
            assert_eq!(
                refresh["registry_edge"]["claims"]["repository"], "acme/app",
                "{refresh}"
            );
        },
    );
    checks.finish();
}
