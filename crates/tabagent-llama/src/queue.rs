//! The line of jobs waiting for a slot: interactive jobs before batch ones, and within a class
//! the callers take turns, so one caller's backlog holds another's next job back by one turn
//! at most. (The server's scheduler does the same in front of limited providers; this line is
//! the engine's own, so a local model needs no limit of the server's for either.)

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Whose a job is and how urgent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobClass {
    /// Background work: runs when no interactive job waits.
    pub batch: bool,
    /// Who asked (an API key's caller name); jobs without one share a turn.
    pub caller: Option<Arc<str>>,
}

/// Jobs by class and caller.
pub(crate) struct FairQueue<J> {
    classes: [Turns<J>; 2],
}

struct Turns<J> {
    order: VecDeque<Option<Arc<str>>>,
    jobs: HashMap<Option<Arc<str>>, VecDeque<J>>,
}

impl<J> Default for Turns<J> {
    fn default() -> Self {
        Self {
            order: VecDeque::new(),
            jobs: HashMap::new(),
        }
    }
}

impl<J> Default for FairQueue<J> {
    fn default() -> Self {
        Self {
            classes: [Turns::default(), Turns::default()],
        }
    }
}

impl<J> FairQueue<J> {
    /// Puts `job` at the back of its caller's queue in its class.
    pub(crate) fn push(&mut self, class: &JobClass, job: J) {
        let turns = &mut self.classes[usize::from(class.batch)];
        let queue = turns.jobs.entry(class.caller.clone()).or_default();
        if queue.is_empty() {
            turns.order.push_back(class.caller.clone());
        }
        queue.push_back(job);
    }

    /// The next job: the first class with any, the caller whose turn it is.
    pub(crate) fn pop(&mut self) -> Option<J> {
        for turns in &mut self.classes {
            while let Some(caller) = turns.order.pop_front() {
                let Some(queue) = turns.jobs.get_mut(&caller) else {
                    continue;
                };
                let job = queue.pop_front();
                if queue.is_empty() {
                    turns.jobs.remove(&caller);
                } else {
                    turns.order.push_back(caller);
                }
                if job.is_some() {
                    return job;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interactive_first_then_callers_in_turn() {
        let mut line = FairQueue::default();
        let class = |batch, caller: &str| JobClass {
            batch,
            caller: Some(Arc::from(caller)),
        };
        line.push(&class(true, "a"), "a-batch");
        line.push(&class(false, "x"), "x1");
        line.push(&class(false, "x"), "x2");
        line.push(&class(false, "y"), "y1");
        line.push(&JobClass::default(), "anon");
        let order: Vec<_> = std::iter::from_fn(|| line.pop()).collect();
        assert_eq!(order, vec!["x1", "y1", "anon", "x2", "a-batch"]);
        assert!(line.pop().is_none());
    }
}
