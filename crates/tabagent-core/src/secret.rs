//! Configuration values that must never be shown: API keys, and URLs that may carry a password.
//! Their `Debug` and `Serialize` forms are redacted, so a config dumped to JSON (`/v1/config`),
//! a log line or a panic message cannot leak them; code that needs the value asks for it with
//! `expose`.

use serde::{Deserialize, Serialize, Serializer};

/// What a redacted value reads as.
pub const REDACTED: &str = "<redacted>";

/// A secret string (an API key): shown as [`REDACTED`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the code that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// A URL or connection string that may hold credentials (`postgres://user:PASSWORD@host/db`,
/// `redis://:PASSWORD@host`, `?password=…`, libpq's `password=…`): shown with them redacted
/// and everything else (scheme, user, host, database) as it is, so it still says where it
/// points.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the code that connects with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value with its credentials replaced by [`REDACTED`].
    pub fn redacted(&self) -> String {
        redact_credentials(&self.0)
    }
}

impl From<String> for SecretUrl {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for SecretUrl {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// Whether `given` equals `expected`, in a time that depends on their lengths only: how much
/// of a key matched must not show in how long the comparison took.
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Parameter names whose values are credentials, in a query string or a libpq key/value
/// string.
const SECRET_PARAMS: &[&str] = &[
    "password",
    "sslpassword",
    "pass",
    "passwd",
    "token",
    "secret",
    "key",
    "api_key",
    "apikey",
    "access_token",
];

fn secret_param(name: &str) -> bool {
    SECRET_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// `text` with the password of a URL's user info, and the values of credential parameters
/// (query or libpq key/value form), replaced by [`REDACTED`]. Anything unparsable that holds an
/// `@` after a scheme is redacted whole up to that `@`: it fails closed.
pub fn redact_credentials(text: &str) -> String {
    match text.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(authority_end);
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _password)) => format!("{user}:{REDACTED}@{host}"),
                    None => format!("{userinfo}@{host}"),
                },
                None => authority.to_string(),
            };
            let tail = match tail.split_once('?') {
                Some((path, query)) => {
                    let (query, fragment) = match query.split_once('#') {
                        Some((query, fragment)) => (query, Some(fragment)),
                        None => (query, None),
                    };
                    let query: Vec<String> = query
                        .split('&')
                        .map(|pair| match pair.split_once('=') {
                            Some((name, _)) if secret_param(name) => format!("{name}={REDACTED}"),
                            _ => pair.to_string(),
                        })
                        .collect();
                    let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
                    format!("{path}?{}{fragment}", query.join("&"))
                }
                None => tail.to_string(),
            };
            format!("{scheme}://{authority}{tail}")
        }
        // libpq's key/value form: `host=db user=me password=x`.
        None => text
            .split(' ')
            .map(|word| match word.split_once('=') {
                Some((name, _)) if secret_param(name) => format!("{name}={REDACTED}"),
                _ => word.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_leave_urls_and_the_rest_stays() {
        let cases = [
            (
                "postgres://tabagent:hunter2hunter2@db.internal:5432/tabagent?sslmode=require",
                "postgres://tabagent:<redacted>@db.internal:5432/tabagent?sslmode=require",
            ),
            (
                "redis://:s3cret@cache:6379/0",
                "redis://:<redacted>@cache:6379/0",
            ),
            ("redis://cache:6379", "redis://cache:6379"),
            (
                "postgres://db/x?user=me&password=s3cret#frag",
                "postgres://db/x?user=me&password=<redacted>#frag",
            ),
            (
                "host=db user=me password=s3cret dbname=x",
                "host=db user=me password=<redacted> dbname=x",
            ),
            // An `@` in the password: everything before the last one is user info.
            ("postgres://me:p@ss@db/x", "postgres://me:<redacted>@db/x"),
        ];
        for (url, shown) in cases {
            let secret = SecretUrl::new(url);
            assert_eq!(secret.redacted(), shown);
            assert_eq!(format!("{secret:?}"), shown);
            assert_eq!(serde_json::to_value(&secret).unwrap(), shown);
            assert_eq!(secret.expose(), url);
        }
    }

    #[test]
    fn keys_compare_equal_only_when_they_are() {
        assert!(constant_time_eq(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"0123456789abcdef", b"0123456789abcdeF"));
        assert!(!constant_time_eq(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn a_secret_shows_nothing_of_itself() {
        let key: Secret = serde_json::from_str("\"sk-0123456789abcdef\"").unwrap();
        assert_eq!(key.expose(), "sk-0123456789abcdef");
        assert_eq!(format!("{key:?}"), REDACTED);
        assert_eq!(
            serde_json::to_string(&key).unwrap(),
            format!("\"{REDACTED}\"")
        );
    }
}
