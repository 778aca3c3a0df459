//! Access tokens (`auth.access_tokens`, `registry-edge token …`) against the real registry
//! with token auth: robot tokens with skopeo and the docker engine, the ACL not consulted
//! for robots, personal tokens narrowed by the ACL, `--from`, revocation (logins and
//! refresh tokens), expiry, `token list`'s last use, the commands' refusals, and the
//! secret never in the log. Then a fleet: two edges on one real `redis-server`, a revoke
//! through one refused on the other within a second.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::auth::{
    auth_yaml, error_code, granted, login, refresh, refresh_token_for, registry_auth_block,
};
use common::docker::{output_text, Dockerd};
use common::redis::RedisServer;
use common::tokens::{create, listed, text, token_command};
use common::{
    make_certs, skip, skopeo_push, tiny_oci_layout, upstream_yaml, wait_for, Checks, Edge, Registry,
};

fn tokens_yaml(dir: &Path) -> String {
    format!(
        "  access_tokens:\n    state_dir: {}\nforwarded:\n  trusted_proxies: [\"127.0.0.0/8\"]\n",
        dir.join("tokens").display()
    )
}

fn pull_push() -> Vec<String> {
    vec!["pull".to_string(), "push".to_string()]
}

#[test]
fn robot_and_personal_tokens_log_in_expire_and_are_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let registry = Registry::start_with(dir.path(), "node", &registry_auth_block(dir.path()));
    let pid_file = dir.path().join("edge.pid");
    let edge = Edge::start_with(
        dir.path(),
        &certs,
        &format!("  shutdown_grace: 1s\n  pid_file: {}\n", pid_file.display()),
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        &auth_yaml(dir.path(), &tokens_yaml(dir.path())),
    );
    let config = edge.config.clone();
    let ca_dir = certs.ca_dir.to_str().unwrap().to_string();
    let ca = certs.ca_dir.join("ca.crt").to_str().unwrap().to_string();
    let host = format!("127.0.0.1:{}", edge.https_port);
    let layout = tiny_oci_layout(&dir.path().join("image"));
    let mut secrets = Vec::new();
    let mut checks = Checks::new();

    let deploy = create(
        &config,
        "ci-deploy",
        &["--scope", "team/app/**:pull,push", "--description", "CI"],
    );
    secrets.push(deploy.clone());
    let creds = format!("ci-deploy:{deploy}");
    checks.run("a robot token pushes within its scope with skopeo", || {
        let target = format!("docker://{host}/team/app/web:v1");
        let out = skopeo_push(&ca_dir, Some(&creds), &layout, &target, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    checks.run(
        "outside its scope skopeo is denied, and no ACL rule matches a robot",
        || {
            // The ACL gives every account `${account}/**`: not to a robot.
            for repository in ["other/app", "ci-deploy/app"] {
                let target = format!("docker://{host}/{repository}:v1");
                let out = skopeo_push(&ca_dir, Some(&creds), &layout, &target, &[]);
                let said = String::from_utf8_lossy(&out.stderr).to_lowercase();
                assert!(!out.status.success(), "{repository} pushed");
                assert!(
                    said.contains("denied") || said.contains("unauthorized"),
                    "{said}"
                );
            }
            let answer = login(
                &edge,
                &ca,
                "ci-deploy",
                &deploy,
                "repository:team/app/web:pull,push,delete",
            );
            assert_eq!(
                granted(&answer),
                [("repository:team/app/web".to_string(), pull_push())]
            );
        },
    );
    checks.run("token list shows the last use, never the secret", || {
        let token = listed(&config, "ci-deploy");
        assert_eq!(token["kind"], "robot");
        assert_eq!(token["account"], "ci-deploy");
        assert_eq!(token["scopes"][0], "team/app/**:pull,push");
        assert_eq!(token["last_used_from"], "127.0.0.1");
        assert!(
            token["last_used_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{token}"
        );
        assert!(
            token["expires"].is_string() && token["revoked"] == false,
            "{token}"
        );
        let all = text(&token_command(&config, &["list", "--json"]));
        assert!(!all.contains(&deploy[4..]), "the secret is listed");
    });

    let personal = create(
        &config,
        "alice-laptop",
        &[
            "--for-account",
            "alice",
            "--scope",
            "alice/**:pull",
            "--scope",
            "bob/**:*",
        ],
    );
    secrets.push(personal.clone());
    checks.run(
        "a personal token acts as its user, within the ACL and its scopes",
        || {
            let answer = login(
                &edge,
                &ca,
                "alice-laptop",
                &personal,
                "repository:alice/app:pull,push",
            );
            assert_eq!(answer.status, 200, "{}", answer.text());
            let claims = granted(&answer);
            assert_eq!(
                claims,
                [("repository:alice/app".to_string(), vec!["pull".to_string()])]
            );
            // bob/** is in its scopes, but the ACL gives alice nothing there.
            assert!(granted(&login(
                &edge,
                &ca,
                "alice-laptop",
                &personal,
                "repository:bob/app:pull"
            ))
            .is_empty());
            assert_eq!(listed(&config, "alice-laptop")["kind"], "personal");
        },
    );

    let office = create(
        &config,
        "office-bot",
        &["--scope", "team/**:pull", "--from", "10.0.0.0/8"],
    );
    secrets.push(office.clone());
    checks.run("--from limits where a token logs in from", || {
        assert_eq!(
            login(&edge, &ca, "office-bot", &office, "repository:team/x:pull").status,
            401
        );
        let url = format!(
            "{}?service={}&scope=repository:team/x:pull",
            edge.url("/jwt/auth"),
            common::auth::SERVICE
        );
        let from_office = common::curl(&[
            "--cacert",
            &ca,
            "-u",
            &format!("office-bot:{office}"),
            "-H",
            "X-Forwarded-For: 10.1.2.3",
            &url,
        ]);
        assert_eq!(from_office.status, 200, "{}", from_office.text());
        // Its registry token works only from there too.
        let bearer = format!(
            "Authorization: Bearer {}",
            from_office.json()["token"].as_str().unwrap()
        );
        let tags = edge.url("/v2/team/x/tags/list");
        let asked = |client: &str| {
            let forwarded = format!("X-Forwarded-For: {client}");
            common::curl(&["--cacert", &ca, "-H", &bearer, "-H", &forwarded, &tags]).status
        };
        assert_ne!(asked("10.1.2.3"), 401, "from inside --from");
        assert_eq!(asked("192.0.2.9"), 401, "replayed from outside --from");
    });

    checks.run(
        "a revoked token's login and refresh token fail at once",
        || {
            let refresh_token =
                refresh_token_for(&edge, &ca, "ci-deploy", &deploy).expect("a refresh token");
            assert_eq!(
                refresh(&edge, &ca, &refresh_token, "repository:team/app/web:pull").status,
                200
            );
            let out = token_command(&config, &["revoke", "ci-deploy"]);
            assert!(out.status.success(), "{}", text(&out));
            let answer = login(
                &edge,
                &ca,
                "ci-deploy",
                &deploy,
                "repository:team/app/web:pull",
            );
            assert_eq!(
                (answer.status, error_code(&answer)),
                (401, "UNAUTHORIZED".to_string())
            );
            assert_eq!(
                refresh(&edge, &ca, &refresh_token, "repository:team/app/web:pull").status,
                401
            );
            assert_eq!(listed(&config, "ci-deploy")["revoked"], true);
            let target = format!("docker://{host}/team/app/web:v2");
            assert!(!skopeo_push(&ca_dir, Some(&creds), &layout, &target, &[])
                .status
                .success());
        },
    );

    if let Some(brief) = checks.run("an expired token is refused", || {
        let brief = create(
            &config,
            "brief",
            &["--scope", "team/**:pull", "--expires", "2s"],
        );
        assert_eq!(
            login(&edge, &ca, "brief", &brief, "repository:team/x:pull").status,
            200
        );
        wait_for("the token to expire", Duration::from_secs(10), || {
            (login(&edge, &ca, "brief", &brief, "repository:team/x:pull").status == 401)
                .then_some(())
        });
        brief
    }) {
        secrets.push(brief);
    }

    checks.run(
        "token create refuses bad scopes, networks, names and users' names",
        || {
            let refused = |args: &[&str], says: &str| {
                let out = token_command(&config, args);
                assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
                assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
            };
            // `create --name NAME --scope SCOPE` and what goes wrong after it.
            let create_refused = |(name, scope): (&str, &str), more: &[&str], says: &str| {
                let mut args = vec!["create", "--name", name, "--scope", scope];
                args.extend_from_slice(more);
                refused(&args, says);
            };
            create_refused(("x", "team/app/**:fly"), &[], "--scope");
            create_refused(
                ("x", "team/**:pull"),
                &["--from", "10.0.0.0/40"],
                "10.0.0.0/40",
            );
            create_refused(("alice", "team/**:pull"), &[], "namespace");
            create_refused(("office-bot", "team/**:pull"), &[], "exists");
            let nobody = ["--for-account", "nobody"];
            create_refused(("x", "a/**:pull"), &nobody, "nobody");
            for (expires, says) in [
                ("soon", "--expires"),
                ("10000y", "100 years"),
                ("500ms", "at least 1s"),
            ] {
                create_refused(("x", "a/**:pull"), &["--expires", expires], says);
            }
            refused(&["revoke", "no-such-token"], "no-such-token");
        },
    );

    checks.run(
        "a user added later under a token's name cannot log in",
        || {
            let line = registry_edge::registry_config::htpasswd_line("office-bot", "pw-office", 4);
            let htpasswd = dir.path().join("htpasswd");
            let mut users = std::fs::read_to_string(&htpasswd).unwrap();
            users.push_str(&format!("{}\n", line.unwrap()));
            std::fs::write(&htpasswd, users).unwrap();
            common::reload(&pid_file);
            wait_for(
                "the backend login to be refused for the token's name",
                Duration::from_secs(10),
                || {
                    let answer = login(
                        &edge,
                        &ca,
                        "office-bot",
                        "pw-office",
                        "repository:team/x:pull",
                    );
                    let refused = edge.log_text().contains("an access token has this name");
                    (refused && answer.status == 401).then_some(())
                },
            );
        },
    );

    checks.run("no secret appears in the edge's log", || {
        let log = edge.log_text();
        assert!(log.contains("ci-deploy"), "the log names the account");
        for secret in &secrets {
            assert!(!log.contains(&secret[4..]), "a secret is in the log");
        }
    });
    checks.finish();
}

#[test]
fn docker_logs_in_with_a_robot_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = match Dockerd::start(&dir.path().join("docker")) {
        Ok(engine) => engine,
        Err(why) => return skip("docker_logs_in_with_a_robot_token", &why),
    };
    let certs = make_certs(dir.path());
    let registry = Registry::start_with(dir.path(), "node", &registry_auth_block(dir.path()));
    let edge = Edge::start(
        dir.path(),
        &certs,
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        &auth_yaml(dir.path(), &tokens_yaml(dir.path())),
    );
    let host = format!("127.0.0.1:{}", edge.https_port);
    engine.trust(&host, &certs.ca_dir.join("ca.crt"));
    let secret = create(&edge.config, "deployer", &["--scope", "team/**:pull,push"]);
    let ok = |out: Output| assert!(out.status.success(), "{}", output_text(&out));
    ok(engine.login(&host, "deployer", &secret));
    let layout = common::images::noise_image(&dir.path().join("layout"), "v1", 1 << 16, 7);
    let archive = dir.path().join("image.tar");
    let inside = format!("{host}/team/app:v1");
    common::images::docker_archive(&layout, &archive, &inside);
    ok(engine.docker(&["load", "-i", archive.to_str().unwrap()]));
    ok(engine.docker(&["push", &inside]));
    let outside = format!("{host}/other/app:v1");
    ok(engine.docker(&["tag", &inside, &outside]));
    let out = engine.docker(&["push", &outside]);
    assert!(!out.status.success(), "pushed outside the scope");
    assert!(
        output_text(&out).contains("denied"),
        "{}",
        output_text(&out)
    );
    let out = token_command(&edge.config, &["revoke", "deployer"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = engine.login(&host, "deployer", &secret);
    assert!(!out.status.success(), "login after revoke");
    assert!(
        !edge.log_text().contains(&secret[4..]),
        "the secret is in the log"
    );
}

#[test]
fn a_revoke_through_one_instance_holds_on_another_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let certs = make_certs(dir.path());
    let registry = Registry::start_with(dir.path(), "node", &registry_auth_block(dir.path()));
    let shared = format!("shared_state:\n  redis:\n    url: {}\n", redis.url());
    let edge = |name: &str| {
        let own = dir.path().join(name);
        std::fs::create_dir_all(&own).unwrap();
        let extra = format!("{}{shared}", auth_yaml(dir.path(), &tokens_yaml(&own)));
        Edge::start(
            &own,
            &certs,
            &upstream_yaml(&[registry.addr()], "repository_hash"),
            &extra,
        )
    };
    let (one, other) = (edge("one"), edge("other"));
    let ca = certs.ca_dir.join("ca.crt").to_str().unwrap().to_string();
    let secret = create(&one.config, "fleet-bot", &["--scope", "team/**:pull"]);
    let scope = "repository:team/x:pull";
    assert_eq!(
        login(&other, &ca, "fleet-bot", &secret, scope).status,
        200,
        "created through one, known to the other"
    );
    let out = token_command(&one.config, &["revoke", "fleet-bot"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for(
        "the other instance to refuse the revoked token",
        Duration::from_secs(1),
        || (login(&other, &ca, "fleet-bot", &secret, scope).status == 401).then_some(()),
    );
    assert_eq!(listed(&other.config, "fleet-bot")["revoked"], true);
}
