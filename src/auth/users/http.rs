//! An external authenticator (`auth.users.http`), the edge's counterpart of nginx's
//! `auth_request`: the edge POSTs `{"user", "password", "client_ip"}` as JSON and reads the
//! status — 200 (with an optional `{"groups": […]}`) accepts, 401 and 403 refuse, anything
//! else or no answer in time means the authenticator is unavailable (503 at the realm, not
//! a failed login). Its TLS is verified like every other backend's; the body is never logged.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::trust::{http_client, read_limited, TrustError};
use crate::config::HttpAuthenticatorSettings;

/// Largest answer read from the authenticator, in bytes.
const MAX_ANSWER: usize = 64 * 1024;

#[derive(Serialize)]
struct Ask<'a> {
    user: &'a str,
    password: &'a str,
    client_ip: String,
}

#[derive(Deserialize)]
struct Accepted {
    #[serde(default)]
    groups: Vec<String>,
}

/// What the authenticator said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HttpAnswer {
    /// Accepted, with the groups it reported.
    Correct(Vec<String>),
    Wrong,
    Unavailable(String),
}

pub(crate) struct HttpAuthenticator {
    url: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAuthenticator")
            .field("url", &self.url)
            .finish()
    }
}

impl HttpAuthenticator {
    /// Reads the trust roots; contacts nothing.
    pub(crate) fn load(
        settings: &HttpAuthenticatorSettings,
    ) -> Result<HttpAuthenticator, TrustError> {
        Ok(HttpAuthenticator {
            url: settings.url.clone(),
            client: http_client(settings.ca.as_deref(), settings.timeout)?,
        })
    }

    pub(crate) async fn login(&self, user: &str, password: &str, client_ip: IpAddr) -> HttpAnswer {
        let ask = Ask {
            user,
            password,
            client_ip: client_ip.to_string(),
        };
        let response = match self.client.post(&self.url).json(&ask).send().await {
            Ok(response) => response,
            Err(e) => {
                let why = if e.is_timeout() {
                    "did not answer in time"
                } else {
                    "could not be reached"
                };
                let cause = crate::report::chain(&e.without_url());
                return HttpAnswer::Unavailable(format!("{} {why}: {cause}", self.url));
            }
        };
        match response.status().as_u16() {
            200 => {}
            401 | 403 => return HttpAnswer::Wrong,
            status => return HttpAnswer::Unavailable(format!("{} answered {status}", self.url)),
        }
        let body = match read_limited(response, MAX_ANSWER).await {
            Ok(body) => body,
            Err(problem) => return HttpAnswer::Unavailable(format!("{}: {problem}", self.url)),
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            return HttpAnswer::Correct(Vec::new());
        }
        match serde_json::from_slice::<Accepted>(&body) {
            Ok(accepted) => HttpAnswer::Correct(accepted.groups),
            Err(e) => HttpAnswer::Unavailable(format!(
                "{}: a 200 answer must be empty or JSON like {{\"groups\": [\"…\"]}}: {e}",
                self.url
            )),
        }
    }
}
