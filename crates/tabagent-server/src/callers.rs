//! Who is calling: the API keys the server accepts and the caller name each stands for, which
//! the scheduler uses for fair queuing, rate limits and token budgets.
//!
//! A key from `server.api_keys` is named `key:` and the first 8 hex digits of its SHA-256 (so
//! metrics and logs can tell keys apart without showing them); a key from
//! `[scheduler.keys.NAME]` is `NAME`; a request without a key (allowed only when no key is
//! configured) is `anonymous`.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tabagent_router::{ConfigError, ANONYMOUS};

use crate::config::Config;

/// The accepted keys.
#[derive(Debug, Default)]
pub struct Callers {
    keys: Vec<(String, Arc<str>)>,
    /// The callers whose keys are marked `admin`.
    admins: Vec<Arc<str>>,
}

/// The caller a request was identified as (a request extension set by the guard).
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<str>);

impl Caller {
    /// A caller without a key.
    pub fn anonymous() -> Caller {
        Caller(Arc::from(ANONYMOUS))
    }
}

impl Callers {
    /// The keys `config` names; named keys' secrets are read from their environment variables.
    pub fn from_config(config: &Config) -> Result<Callers, ConfigError> {
        let mut keys: Vec<(String, Arc<str>)> = config
            .server
            .api_keys
            .iter()
            .map(|key| {
                let key = key.expose().to_string();
                let name = Arc::from(fingerprint(&key).as_str());
                (key, name)
            })
            .collect();
        let mut admins = Vec::new();
        for (name, limits) in &config.scheduler.keys {
            let secret = match (&limits.key, &limits.key_env) {
                (Some(key), _) => key.clone(),
                (None, Some(var)) => std::env::var(var).map_err(|_| {
                    ConfigError(format!(
                        "scheduler.keys.{name}: the environment variable {var} (its key) is not set"
                    ))
                })?,
                (None, None) => {
                    return Err(ConfigError(format!(
                        "scheduler.keys.{name}: give key_env or key"
                    )))
                }
            };
            if secret.trim().len() < 16 {
                return Err(ConfigError(format!(
                    "scheduler.keys.{name}: API keys must be at least 16 characters long"
                )));
            }
            if keys.iter().any(|(known, _)| *known == secret) {
                return Err(ConfigError(format!(
                    "scheduler.keys.{name}: the same key is configured twice"
                )));
            }
            keys.push((secret, Arc::from(name.as_str())));
            if limits.admin {
                admins.push(Arc::from(name.as_str()));
            }
        }
        Ok(Callers { keys, admins })
    }

    /// Whether `caller` holds an administrator's key (`admin = true` under
    /// `[scheduler.keys.NAME]`); a caller without a key never does.
    pub fn is_admin(&self, caller: Option<&Caller>) -> bool {
        caller.is_some_and(|caller| self.admins.contains(&caller.0))
    }

    /// Whether any key is required.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The caller `given` is the key of, compared without an early exit so timing does not
    /// reveal how much of a key matched.
    pub fn identify(&self, given: &str) -> Option<Caller> {
        let given = given.trim().as_bytes();
        let mut found = None;
        for (key, name) in &self.keys {
            if tabagent_core::secret::constant_time_eq(given, key.as_bytes()) {
                found = Some(Caller(Arc::clone(name)));
            }
        }
        found
    }
}

/// `key:` and the first 8 hex digits of the key's SHA-256.
fn fingerprint(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("key:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_told_apart_and_named_keys_keep_their_names() {
        let mut config = Config::default();
        config.server.api_keys = vec!["a".repeat(16).into(), "b".repeat(16).into()];
        config.scheduler.keys.insert(
            "batch-jobs".to_string(),
            tabagent_router::CallerLimits {
                key: Some("c".repeat(20)),
                ..Default::default()
            },
        );
        config.scheduler.keys.insert(
            "operator".to_string(),
            tabagent_router::CallerLimits {
                key: Some("d".repeat(20)),
                admin: true,
                ..Default::default()
            },
        );
        let callers = Callers::from_config(&config).unwrap();
        let a = callers.identify(&"a".repeat(16)).unwrap().0;
        let b = callers.identify(&"b".repeat(16)).unwrap().0;
        assert!(a.starts_with("key:") && b.starts_with("key:") && a != b);
        assert_eq!(&*callers.identify(&"c".repeat(20)).unwrap().0, "batch-jobs");
        assert!(callers.identify(&"a".repeat(15)).is_none());
        // Only a key marked admin is one; no key is none.
        let operator = callers.identify(&"d".repeat(20));
        assert!(callers.is_admin(operator.as_ref()));
        assert!(!callers.is_admin(callers.identify(&"c".repeat(20)).as_ref()));
        assert!(!callers.is_admin(callers.identify(&"a".repeat(16)).as_ref()));
        assert!(!callers.is_admin(Some(&Caller::anonymous())));
        assert!(!callers.is_admin(None));
        config.scheduler.keys.insert(
            "short".to_string(),
            tabagent_router::CallerLimits {
                key: Some("short".to_string()),
                ..Default::default()
            },
        );
        assert!(Callers::from_config(&config).is_err());
    }
}
