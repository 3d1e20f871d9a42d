//! A crash loses no acknowledged write: `tabagent memory import` is SIGKILLed at random moments
//! 200 times while it writes records with vectors; after each kill every record it had
//! acknowledged is there, and the vector index agrees with SQLite.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use tabagent_memory::{Memory, MemoryConfig};

use crate::server::tabagent;

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const ROUNDS: usize = 200;
const LINES_PER_ROUND: usize = 30;

#[test]
fn acknowledged_records_survive_sigkill_at_random_moments() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut acknowledged: HashMap<i64, String> = HashMap::new();
    let mut killed_before_first_ack = 0;
    for round in 0..ROUNDS {
        let mut child = tabagent(data_dir.path())
            .args(["memory", "import", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines: Vec<String> = (0..LINES_PER_ROUND)
            .map(|i| {
                let vector: Vec<f32> = (0..16)
                    .map(|_| (rng.next() % 2001) as f32 / 1000.0 - 1.0)
                    .collect();
                serde_json::json!({
                    "store": if i % 2 == 0 { "knowledge" } else { "experience" },
                    "text": format!("round {round} line {i}"),
                    "space": "s",
                    "vector": vector,
                })
                .to_string()
            })
            .collect();
        let texts: Vec<String> = (0..LINES_PER_ROUND)
            .map(|i| format!("round {round} line {i}"))
            .collect();
        let mut stdin = child.stdin.take().unwrap();
        // Feeds every line; the kill ends it with a broken pipe.
        let feeder = std::thread::spawn(move || {
            for line in lines {
                if writeln!(stdin, "{line}").is_err() {
                    return;
                }
            }
        });
        let kill_after = (rng.next() % (LINES_PER_ROUND as u64)) as usize;
        let mut acks = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < kill_after {
            let Some(Ok(line)) = acks.next() else { break };
            let ack: serde_json::Value = serde_json::from_str(&line).unwrap();
            let id = ack["id"].as_i64().unwrap();
            let at = ack["line"].as_u64().unwrap() as usize;
            acknowledged.insert(id, texts[at - 1].clone());
            seen += 1;
        }
        if kill_after == 0 {
            killed_before_first_ack += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let _ = feeder.join();

        let memory = Memory::open(&MemoryConfig::at(data_dir.path().join("memory"))).unwrap();
        for (id, text) in &acknowledged {
            let record = memory
                .get(*id)
                .unwrap_or_else(|e| panic!("round {round}: acknowledged record {id} lost: {e}"));
            assert_eq!(&record.text, text, "round {round}");
        }
        let report = memory.check().unwrap();
        assert!(report.ok, "round {round}: {:?}", report.problems);
        assert!(report.vectors as usize >= acknowledged.len());
    }
    assert!(
        acknowledged.len() > ROUNDS,
        "the kills left too few writes to prove anything"
    );
    assert!(
        killed_before_first_ack > 0,
        "some kills should land before the first write"
    );
}
