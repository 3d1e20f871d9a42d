//! The one way to a model on this machine: the in-process llama.cpp engine, or the ML worker for
//! a Transformers model (the registry chose the engine from the model's files). The service
//! calls it behind the scheduler's permits; the router's `local` provider calls it behind the
//! router's.

use std::sync::Arc;

use tabagent_core::{ChatMessage, GenerationParams};
use tabagent_llama::JobClass;

use super::events::Events;
use crate::catalog::ModelKind;
use crate::error::ServiceError;
use crate::registry::{Acquired, Engine};

/// What to run: a conversation, or a raw prompt to continue.
pub enum Input {
    /// Chat turns, through the model's template.
    Chat(Vec<ChatMessage>),
    /// Text continued as it is.
    Prompt(String),
}

/// Starts `input` on the model `acquired` holds; its events as they come.
pub async fn start(
    acquired: Acquired,
    input: Input,
    params: GenerationParams,
    class: JobClass,
) -> Result<Events, ServiceError> {
    let engine = match acquired.engine {
        Engine::Worker(model) if model.kind == ModelKind::TextGeneration => {
            let (messages, prompt) = match input {
                Input::Chat(messages) => (messages, None),
                Input::Prompt(prompt) => (Vec::new(), Some(prompt)),
            };
            let stream = crate::worker::generate(model, &messages, prompt, &params).await?;
            return Ok(Events::stream(stream));
        }
        engine => engine.llama(&acquired.id)?,
    };
    let span = tracing::Span::current();
    // Templating and tokenizing are CPU work: off the async threads.
    let handle = tokio::task::spawn_blocking(move || {
        span.in_scope(|| match input {
            Input::Chat(messages) => engine.chat_as(&messages, params, class),
            Input::Prompt(prompt) => engine.complete_as(&prompt, params, class),
        })
    })
    .await
    .map_err(ServiceError::internal)??;
    Ok(Events::from(handle))
}

/// Where a request with `ticket` waits in a local engine's line.
pub fn job_class(ticket: &tabagent_router::Ticket) -> JobClass {
    JobClass {
        batch: ticket.priority == tabagent_router::Priority::Batch,
        caller: Some(Arc::clone(&ticket.caller)),
    }
}
