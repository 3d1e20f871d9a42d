//! Streaming stop-string detection that never leaks part of a stop string.
//!
//! Text arrives a token at a time; a stop string can span tokens. The matcher holds back the
//! shortest tail that could still grow into a stop string and releases it once it cannot.

/// What one push of text produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopStep {
    /// Text that is safe to send now.
    pub emit: String,
    /// A stop string matched; generation must end and nothing after it is sent.
    pub matched: bool,
}

/// Finds stop strings in streamed text.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    /// A matcher for `stops`; empty strings are ignored.
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            stops,
            held: String::new(),
        }
    }

    /// Adds `text` and returns what may be sent.
    pub fn push(&mut self, text: &str) -> StopStep {
        if self.stops.is_empty() {
            return StopStep {
                emit: text.to_string(),
                matched: false,
            };
        }
        self.held.push_str(text);
        let first_match = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min();
        if let Some(at) = first_match {
            let emit = self.held[..at].to_string();
            self.held.clear();
            return StopStep {
                emit,
                matched: true,
            };
        }
        let keep = self.longest_partial_suffix();
        let split = self.held.len() - keep;
        let emit = self.held[..split].to_string();
        self.held.drain(..split);
        StopStep {
            emit,
            matched: false,
        }
    }

    /// Releases held text at the end of a generation that did not stop on a stop string.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length in bytes of the longest suffix of `held` that is a proper prefix of some stop string,
    /// always on a character boundary.
    fn longest_partial_suffix(&self) -> usize {
        let mut best = 0;
        for stop in &self.stops {
            let max = stop.len().saturating_sub(1).min(self.held.len());
            for len in (best + 1..=max).rev() {
                let start = self.held.len() - len;
                if self.held.is_char_boundary(start) && stop.starts_with(&self.held[start..]) {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut matcher = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for piece in pieces {
            let step = matcher.push(piece);
            out.push_str(&step.emit);
            if step.matched {
                return (out, true);
            }
        }
        out.push_str(&matcher.flush());
        (out, false)
    }

    #[test]
    fn stop_spanning_tokens_is_cut_and_not_leaked() {
        assert_eq!(
            run(&["</end>"], &["abc</", "en", "d>tail"]),
            ("abc".to_string(), true)
        );
    }

    #[test]
    fn partial_stop_that_does_not_complete_is_released() {
        assert_eq!(
            run(&["</end>"], &["abc</", "en", "x"]),
            ("abc</enx".to_string(), false)
        );
        assert_eq!(run(&["</end>"], &["abc</e"]), ("abc</e".to_string(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(
            run(&["world", "lo"], &["hello world"]),
            ("hel".to_string(), true)
        );
    }

    #[test]
    fn multibyte_text_is_split_on_char_boundaries() {
        assert_eq!(run(&["éé"], &["aé", "b"]), ("aéb".to_string(), false));
        assert_eq!(run(&["éé"], &["aé", "é"]), ("a".to_string(), true));
    }

    #[test]
    fn no_stops_passes_everything_through() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".to_string(), false));
    }
}
