//! The one integration-test binary of tabagent-models.
// Tests state their expectations with unwrap/expect/panic: a failure is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod chat_template;
mod gguf;
