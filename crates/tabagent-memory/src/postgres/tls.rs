//! How a connection string asks for TLS, read the way libpq reads it, and the connector that
//! gives it.
//!
//! tokio-postgres understands `sslmode` = `disable`, `prefer` or `require` and nothing about
//! certificates, so the libpq options it lacks (`sslmode=verify-ca` / `verify-full`,
//! `sslrootcert`) are taken out of the string here before it is parsed. The server's
//! certificate is always verified, host name included (libpq's `verify-full`), against the
//! Mozilla roots plus `sslrootcert` when given: an encrypted connection to an unverified
//! server would only look safe. With no `sslmode`, a database on loopback or a Unix socket is
//! reached in the clear (nothing crosses a network) and any other is asked for TLS first.

use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio_postgres::config::{Host, SslMode};

use crate::MemoryError;

/// What the connection string asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Unset,
    Disable,
    Prefer,
    Require,
}

/// A parsed connection string and how to secure it.
pub(crate) struct Target {
    pub config: tokio_postgres::Config,
    /// `None`: in the clear.
    pub tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

fn invalid(message: impl Into<String>) -> MemoryError {
    MemoryError::invalid("postgres", message)
}

/// Reads `url` (a `postgres://` URL or libpq's `key=value` pairs).
pub(crate) fn target(url: &str) -> Result<Target, MemoryError> {
    let (rest, options) = take_tls_options(url)?;
    let mut asked = Asked::Unset;
    let mut root_cert: Option<PathBuf> = None;
    for (key, value) in options {
        match key.as_str() {
            "sslmode" => {
                asked = match value.as_str() {
                    "disable" => Asked::Disable,
                    "allow" | "prefer" => Asked::Prefer,
                    "require" | "verify-ca" | "verify-full" => Asked::Require,
                    other => {
                        return Err(invalid(format!(
                            "sslmode `{other}` is not one of disable, allow, prefer, require, \
                             verify-ca, verify-full"
                        )))
                    }
                }
            }
            _ => root_cert = Some(PathBuf::from(value)),
        }
    }
    let mut config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e| invalid(format!("not a PostgreSQL connection string: {e}")))?;
    let local = config.get_hosts().iter().all(|host| match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => is_loopback(name),
    });
    let mode = match asked {
        Asked::Disable => SslMode::Disable,
        Asked::Unset if local && root_cert.is_none() => SslMode::Disable,
        Asked::Unset | Asked::Prefer => SslMode::Prefer,
        Asked::Require => SslMode::Require,
    };
    config.ssl_mode(mode);
    let tls = match mode {
        SslMode::Disable => None,
        _ => Some(connector(root_cert.as_deref())?),
    };
    Ok(Target { config, tls })
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A TLS connector trusting the Mozilla roots and, if given, the certificates in `root_cert`.
fn connector(
    root_cert: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, MemoryError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = root_cert {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                invalid(format!(
                    "sslrootcert {}: cannot read PEM certificates ({e})",
                    path.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(invalid(format!(
                "sslrootcert {}: holds no certificate",
                path.display()
            )));
        }
        let (_, refused) = roots.add_parsable_certificates(certs);
        if refused > 0 {
            return Err(invalid(format!(
                "sslrootcert {}: {refused} certificate(s) could not be used",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MemoryError::Unavailable(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Splits libpq's TLS options (`sslmode`, `sslrootcert`) from the rest of `url`.
fn take_tls_options(url: &str) -> Result<(String, Vec<(String, String)>), MemoryError> {
    let is_tls_key = |key: &str| key == "sslmode" || key == "sslrootcert";
    let mut taken = Vec::new();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), taken));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if is_tls_key(key) {
                taken.push((key.to_string(), percent_decode(value)?));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, taken));
    }
    let mut kept = Vec::new();
    for (key, value, raw) in key_values(url)? {
        if is_tls_key(&key) {
            taken.push((key, value));
        } else {
            kept.push(raw);
        }
    }
    Ok((kept.join(" "), taken))
}

/// libpq's `key = value` pairs: (key, unquoted value, the pair as written).
fn key_values(s: &str) -> Result<Vec<(String, String, String)>, MemoryError> {
    let mut pairs = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            return Ok(pairs);
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(invalid(format!(
                "`{key}` has no value (expected key=value)"
            )));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => value.push(c),
                        None => return Err(invalid("unterminated quoted value")),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err(invalid("unterminated quoted value")),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                value.push(c);
            }
        }
        let end = chars.peek().map_or(s.len(), |&(i, _)| i);
        pairs.push((key, value, s[start..end].trim_end().to_string()));
    }
}

fn percent_decode(s: &str) -> Result<String, MemoryError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid(format!("bad percent-encoding in `{s}`")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid(format!("`{s}` is not UTF-8")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn mode(url: &str) -> (SslMode, bool) {
        let t = target(url).unwrap();
        (t.config.get_ssl_mode(), t.tls.is_some())
    }

    #[test]
    fn loopback_and_sockets_go_in_the_clear_unless_asked_and_the_rest_try_tls() {
        assert_eq!(
            mode("postgres://u@127.0.0.1:5/db"),
            (SslMode::Disable, false)
        );
        assert_eq!(mode("postgres://u@[::1]:5/db"), (SslMode::Disable, false));
        assert_eq!(
            mode("postgres:///db?host=/run/postgresql"),
            (SslMode::Disable, false)
        );
        assert_eq!(mode("host=localhost dbname=db"), (SslMode::Disable, false));
        assert_eq!(mode("postgres://u@db.internal/db"), (SslMode::Prefer, true));
        assert_eq!(
            mode("postgres://u@db.internal/db?sslmode=disable"),
            (SslMode::Disable, false)
        );
        assert_eq!(
            mode("postgres://u@127.0.0.1/db?sslmode=verify-full&connect_timeout=5"),
            (SslMode::Require, true)
        );
        assert_eq!(
            mode("host=10.0.0.5 sslmode='require' user=u"),
            (SslMode::Require, true)
        );
    }

    #[test]
    fn the_tls_options_are_taken_out_and_the_rest_is_kept() {
        let (rest, taken) =
            take_tls_options("postgres://u:p@h/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca%20x.pem&application_name=t")
                .unwrap();
        assert_eq!(rest, "postgres://u:p@h/db?application_name=t");
        assert_eq!(
            taken,
            vec![
                ("sslmode".to_string(), "verify-full".to_string()),
                ("sslrootcert".to_string(), "/tmp/ca x.pem".to_string())
            ]
        );
        let (rest, taken) =
            take_tls_options("host=h  sslrootcert = '/tmp/my ca.pem' password='a \\' b'").unwrap();
        assert_eq!(rest, "host=h password='a \\' b'");
        assert_eq!(
            taken,
            vec![("sslrootcert".to_string(), "/tmp/my ca.pem".to_string())]
        );
    }

    #[test]
    fn bad_tls_options_are_refused_by_name() {
        for url in [
            "postgres://u@h/db?sslmode=sometimes",
            "postgres://u@h/db?sslmode=require&sslrootcert=/nonexistent/ca.pem",
            "host=h sslrootcert='/tmp/unterminated",
            "postgres://u@h/db?sslrootcert=%zz",
        ] {
            let err = target(url).err().unwrap();
            assert_eq!(err.param(), Some("postgres"), "{url}: {err}");
        }
    }
}
