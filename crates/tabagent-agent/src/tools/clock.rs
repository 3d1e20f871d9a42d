//! `current_time`: the date and time now, in UTC (RFC 3339) and as a Unix timestamp.

use serde_json::{json, Value};
use tabagent_core::ToolSpec;

use super::{Tool, ToolFuture};

/// The clock tool.
pub struct CurrentTime;

impl Tool for CurrentTime {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "current_time".into(),
            description: Some("The current date and time in UTC, and as a Unix timestamp.".into()),
            parameters: json!({"type": "object", "properties": {}, "additionalProperties": false}),
            strict: false,
        }
    }

    fn call(&self, _arguments: Value) -> ToolFuture<'_> {
        Box::pin(async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            Ok(format!("{} (unix {now})", rfc3339(now)))
        })
    }
}

/// `2026-12-07T15:04:05Z` for a Unix time in seconds.
fn rfc3339(unix: u64) -> String {
    let (year, month, day) = tabagent_core::calendar::civil_from_days(unix / 86_400);
    let seconds = unix % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_become_calendar_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_656_043), "2026-12-07T15:07:23Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
