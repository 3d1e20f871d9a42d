//! How many model downloads the API runs at once: at most `hub.max_pulls` in all and
//! `hub.max_pulls_per_caller` for one API key; a pull beyond is refused (429) rather than
//! queued, since a pull of the same file already running is what the caller is waiting for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The pulls running, by caller.
#[derive(Debug)]
pub struct PullSlots {
    running: Mutex<HashMap<String, usize>>,
    max_total: usize,
    max_per_caller: usize,
}

/// A running pull's place; freed when dropped (when the download ends, however it ends).
#[derive(Debug)]
pub struct PullSlot {
    slots: Arc<PullSlots>,
    caller: String,
}

/// Why a pull may not start now.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PullsFull {
    #[error(
        "{0} downloads are running, the most at once (hub.max_pulls); try again when one ends"
    )]
    Total(usize),
    #[error(
        "this caller has {0} downloads running, the most one caller may (hub.max_pulls_per_caller)"
    )]
    Caller(usize),
}

impl PullSlots {
    pub fn new(max_total: usize, max_per_caller: usize) -> Arc<Self> {
        Arc::new(Self {
            running: Mutex::new(HashMap::new()),
            max_total,
            max_per_caller,
        })
    }

    /// A place for `caller`'s pull, if there is one.
    pub fn take(self: &Arc<Self>, caller: &str) -> Result<PullSlot, PullsFull> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = running.values().sum();
        if total >= self.max_total {
            return Err(PullsFull::Total(total));
        }
        let mine = running.entry(caller.to_string()).or_default();
        if *mine >= self.max_per_caller {
            return Err(PullsFull::Caller(*mine));
        }
        *mine += 1;
        Ok(PullSlot {
            slots: Arc::clone(self),
            caller: caller.to_string(),
        })
    }
}

impl Drop for PullSlot {
    fn drop(&mut self) {
        let mut running = self.slots.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mine) = running.get_mut(&self.caller) {
            *mine -= 1;
            if *mine == 0 {
                running.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_are_bounded_in_all_and_per_caller_and_places_come_back() {
        let slots = PullSlots::new(3, 2);
        let a1 = slots.take("a").unwrap();
        let _a2 = slots.take("a").unwrap();
        assert_eq!(slots.take("a").unwrap_err(), PullsFull::Caller(2));
        let _b1 = slots.take("b").unwrap();
        assert_eq!(slots.take("c").unwrap_err(), PullsFull::Total(3));
        drop(a1);
        let _c1 = slots.take("c").unwrap();
        assert_eq!(slots.take("a").unwrap_err(), PullsFull::Total(3));
    }
}
