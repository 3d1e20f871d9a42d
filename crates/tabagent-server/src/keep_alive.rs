//! How long a model stays loaded after its last request, as Ollama's `keep_alive` spells it.

use std::time::Duration;

/// How long an idle model stays loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Until unloaded by hand or evicted for room.
    Forever,
    /// This long after its last request ends; zero unloads it as soon as it is idle.
    For(Duration),
}

/// The longest finite keep-alive; anything longer is refused rather than overflowing.
const LONGEST: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl KeepAlive {
    /// From configuration: seconds, negative for forever.
    pub fn from_secs(secs: i64) -> Self {
        u64::try_from(secs).map_or(Self::Forever, |secs| {
            Self::For(Duration::from_secs(secs).min(LONGEST))
        })
    }

    /// Seconds, `-1` for forever (the listing's and the configuration's form).
    pub fn as_secs(self) -> i64 {
        match self {
            Self::Forever => -1,
            Self::For(duration) => i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// From a request: a number of seconds or a duration string (`"10m"`, `"1h30m"`, `"45s"`,
    /// `"500ms"`, `"0"`); anything negative means forever.
    pub fn parse(value: &serde_json::Value) -> Result<Self, String> {
        match value {
            serde_json::Value::Number(number) => {
                let secs = number
                    .as_f64()
                    .ok_or_else(|| "keep_alive is not a number of seconds".to_string())?;
                Self::from_f64_secs(secs)
            }
            serde_json::Value::String(text) => Self::parse_str(text),
            _ => Err("keep_alive must be a number of seconds or a duration such as \"10m\"".into()),
        }
    }

    fn parse_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let invalid = || {
            format!(
                "keep_alive {:?} is not a duration (examples: \"30s\", \"10m\", \"1h30m\", \"-1\")",
                text.chars().take(40).collect::<String>()
            )
        };
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        if rest.is_empty() {
            return Err(invalid());
        }
        // A bare number is seconds.
        if let Ok(secs) = rest.parse::<f64>() {
            return Self::from_f64_secs(if negative { -secs } else { secs });
        }
        let mut total = 0.0f64;
        let mut rest = rest;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(invalid)?;
            let amount: f64 = rest[..digits].parse().map_err(|_| invalid())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let seconds_per_unit = match &rest[..unit_len] {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 1e-3,
                "us" | "µs" => 1e-6,
                "ns" => 1e-9,
                _ => return Err(invalid()),
            };
            rest = &rest[unit_len..];
            total += amount * seconds_per_unit;
        }
        Self::from_f64_secs(if negative { -total } else { total })
    }

    fn from_f64_secs(secs: f64) -> Result<Self, String> {
        if secs.is_nan() {
            return Err("keep_alive is not a number".into());
        }
        if secs < 0.0 {
            return Ok(Self::Forever);
        }
        match Duration::try_from_secs_f64(secs) {
            Ok(duration) if duration <= LONGEST => Ok(Self::For(duration)),
            _ => Err(format!(
                "keep_alive is longer than {} days; use -1 to keep the model loaded",
                LONGEST.as_secs() / 86400
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn parsed(value: serde_json::Value) -> Result<KeepAlive, String> {
        KeepAlive::parse(&value)
    }

    #[test]
    fn numbers_are_seconds_and_negative_is_forever() {
        assert_eq!(
            parsed(json!(30)),
            Ok(KeepAlive::For(Duration::from_secs(30)))
        );
        assert_eq!(
            parsed(json!(0.5)),
            Ok(KeepAlive::For(Duration::from_millis(500)))
        );
        assert_eq!(parsed(json!(0)), Ok(KeepAlive::For(Duration::ZERO)));
        assert_eq!(parsed(json!(-1)), Ok(KeepAlive::Forever));
    }

    #[test]
    fn duration_strings_follow_ollama() {
        let cases = [
            ("10m", 600_000),
            ("1h30m", 5_400_000),
            ("45s", 45_000),
            ("500ms", 500),
            ("1.5h", 5_400_000),
            ("0", 0),
            ("300", 300_000),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parsed(json!(text)),
                Ok(KeepAlive::For(Duration::from_millis(millis))),
                "{text}"
            );
        }
        assert_eq!(parsed(json!("-1")), Ok(KeepAlive::Forever));
        assert_eq!(parsed(json!("-5m")), Ok(KeepAlive::Forever));
    }

    #[test]
    fn nonsense_and_overflow_are_refused() {
        for bad in [
            json!("soon"),
            json!("10x"),
            json!("m"),
            json!(""),
            json!("1e400"),
            json!(true),
            json!([1]),
            json!(1e300),
            json!("99999999999h"),
        ] {
            assert!(parsed(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn configuration_seconds_round_trip() {
        assert_eq!(KeepAlive::from_secs(-1), KeepAlive::Forever);
        assert_eq!(KeepAlive::from_secs(-1).as_secs(), -1);
        assert_eq!(KeepAlive::from_secs(300).as_secs(), 300);
    }
}
