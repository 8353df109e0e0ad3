//! `berth login`: credentials are tried against the registry before they
//! are stored, as `docker login` does. The check is the distribution
//! API's version endpoint (`GET /v2/`): with basic auth a 200 means the
//! registry took them; with a bearer challenge the token service is asked
//! for a token (`account=USER`, basic auth) and `/v2/` is tried with it.
//!
//! HTTPS first; a registry on a loopback address is tried over plain HTTP
//! when HTTPS cannot connect (Docker treats 127.0.0.0/8 as insecure by
//! default, and so does this check).

use std::net::IpAddr;

use crate::auth::Credential;
use crate::{Error, Result};

/// How long one request may take before the login gives up.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn failed(registry: &str, message: impl std::fmt::Display) -> Error {
    Error::Registry(format!("login to {registry} failed: {message}"))
}

/// Whether `registry` (host[:port]) names this machine.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A reqwest error with its causes, on one line.
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

/// Tries `cred` on `registry`; `Ok` when the registry accepts it.
/// `ca_certs`: extra CA certificates (PEM) to trust for it.
pub async fn verify(registry: &str, cred: &Credential, ca_certs: &[Vec<u8>]) -> Result<()> {
    // rustls needs a process-wide crypto provider; ring is the one built in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let roots = ca_certs
        .iter()
        .map(|pem| reqwest::Certificate::from_pem(pem))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| failed(registry, format!("a CA certificate: {}", describe(&e))))?;
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .tls_certs_merge(roots)
        .build()
        .map_err(|e| failed(registry, describe(&e)))?;
    match verify_at(&client, "https", registry, cred).await {
        Err(Attempt::Unreachable(e)) if is_loopback(registry) => {
            match verify_at(&client, "http", registry, cred).await {
                Ok(()) => Ok(()),
                Err(Attempt::Denied(m)) => Err(failed(registry, m)),
                // Not a plain-HTTP registry either (a TLS one answers
                // plain HTTP with 400): the HTTPS error is the one to fix.
                Err(Attempt::Unreachable(_) | Attempt::Refused(_)) => Err(failed(registry, e)),
            }
        }
        Ok(()) => Ok(()),
        Err(Attempt::Unreachable(m) | Attempt::Refused(m) | Attempt::Denied(m)) => {
            Err(failed(registry, m))
        }
    }
}

/// Why one attempt did not log in.
enum Attempt {
    /// No HTTP answer at all (connection, TLS).
    Unreachable(String),
    /// The registry answered, but not as a registry asking for credentials.
    Refused(String),
    /// The registry (or its token service) refused the credentials.
    Denied(String),
}

async fn verify_at(
    client: &reqwest::Client,
    scheme: &str,
    registry: &str,
    cred: &Credential,
) -> Result<(), Attempt> {
    let url = format!("{scheme}://{registry}/v2/");
    let send = |req: reqwest::RequestBuilder| async {
        req.send()
            .await
            .map_err(|e| Attempt::Unreachable(describe(&e)))
    };
    let first = send(client.get(&url)).await?;
    if first.status().is_success() {
        // The registry wants no credentials; Docker accepts the login too.
        return Ok(());
    }
    if first.status() != reqwest::StatusCode::UNAUTHORIZED {
        return Err(Attempt::Refused(format!("{url}: {}", first.status())));
    }
    let challenge = first
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bearer = http_auth::parse_challenges(&challenge)
        .ok()
        .and_then(|cs| {
            cs.into_iter()
                .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        })
        .map(|c| {
            let param = |name: &str| {
                c.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
            };
            (param("realm"), param("service"))
        });
    let retry = match bearer {
        Some((Some(realm), service)) => {
            let mut query = vec![("account", cred.username.clone())];
            if let Some(s) = service {
                query.push(("service", s));
            }
            let res = send(
                client
                    .get(&realm)
                    .query(&query)
                    .basic_auth(&cred.username, Some(&cred.password)),
            )
            .await?;
            if !res.status().is_success() {
                return Err(Attempt::Denied(format!(
                    "{realm}: {}: the token service refused the username or password",
                    res.status()
                )));
            }
            #[derive(serde::Deserialize)]
            struct Token {
                #[serde(default)]
                token: Option<String>,
                #[serde(default)]
                access_token: Option<String>,
            }
            let t: Token = res
                .json()
                .await
                .map_err(|e| Attempt::Refused(format!("{realm}: the token does not parse: {e}")))?;
            let Some(token) = t.token.or(t.access_token) else {
                return Err(Attempt::Refused(format!(
                    "{realm}: the answer has no token"
                )));
            };
            client.get(&url).bearer_auth(token)
        }
        Some((None, _)) => {
            return Err(Attempt::Refused(format!(
                "{url}: a bearer challenge without a realm"
            )))
        }
        None => client
            .get(&url)
            .basic_auth(&cred.username, Some(&cred.password)),
    };
    let res = send(retry).await?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(Attempt::Denied(format!(
            "{url}: {}: the registry refused the username or password",
            res.status()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names() {
        for r in [
            "127.0.0.1:5000",
            "127.3.4.5",
            "localhost:5000",
            "[::1]:5000",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "10.45.0.1:5000",
            "registry.example:443",
            "[2001:db8::1]:5000",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }
}
