//! Integration tests for tabagent-router: real HTTP to fake engines on loopback that inject
//! faults (errors, 429s, streams that break, silence).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod routing;
