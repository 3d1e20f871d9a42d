//! The HTTP API: one [`router`] over [`AppState`].
//!
//! **Boundary:** the only place that knows OpenAI's JSON (`wire`), Ollama's (`ollama`) and HTTP
//! status codes (`error`). Handlers parse their dialect into the services' types
//! (`generation::ChatJob`) and write the answer back in it.

mod admission;
mod audio;
mod chat;
mod completions;
mod context;
mod conversation;
mod convert;
mod documents;
mod embeddings;
pub mod error;
mod files;
#[cfg(test)]
mod fuzz_tests;
mod generate;
mod graph;
mod health;
mod json;
pub mod listener;
pub mod mcp;
mod memory;
mod models;
mod ollama;
mod onnx;
mod pull;
mod rerank;
mod responses;
mod security;
mod sessions;
mod tokenize;
mod upload;
pub(crate) mod vision;
mod webrtc;
mod wire;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, Method, Request, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::state::AppState;
use error::ApiError;

/// The OpenAPI description, generated from the handlers and wire types.
#[derive(OpenApi)]
#[openapi(
    info(title = "tabagent", description = "Local-first AI runtime with an OpenAI-compatible API."),
    paths(
        chat::chat_completions,
        completions::completions,
        embeddings::embeddings,
        rerank::rerank,
        onnx::describe,
        onnx::run,
        models::list_models,
        models::get_model,
        pull::pull,
        pull::delete_model,
        pull::model_action,
        files::get_file,
        files::fetch_file,
        tokenize::tokenize,
        tokenize::detokenize,
        health::health,
        health::ready,
        health::config,
        health::router_status,
        health::worker_status,
        health::analytics,
        sessions::get_session,
        sessions::put_session,
        sessions::delete_session,
        webrtc::offer,
        webrtc::candidate,
        webrtc::list,
        webrtc::get_one,
        webrtc::close,
        health::optimize,
        health::feedback,
        memory::stats,
        memory::search,
        memory::surprise,
        memory::transaction,
        memory::create,
        memory::list,
        memory::get_one,
        memory::delete_one,
        graph::upsert_entity,
        graph::get_entity,
        graph::relate,
        graph::get_relation,
        graph::delete_relation,
        graph::neighbourhood,
        graph::path,
        graph::merge,
        graph::consolidate,
        graph::extract,
        conversation::summarize_now,
        vision::analyze,
        audio::transcriptions,
        documents::create,
        documents::list,
        documents::get,
        documents::delete,
        documents::events
    ),
    tags((name = "openai", description = "OpenAI-compatible endpoints"), (name = "models", description = "Downloading and removing models"), (name = "tokens", description = "A model's tokenizer"), (name = "onnx", description = "Any ONNX model on named tensors"), (name = "health", description = "Probes and configuration"), (name = "memory", description = "The seven memory stores and their search"), (name = "documents", description = "Documents in the memory: added, read into passages with page citations, removed"), (name = "sessions", description = "Conversations the server keeps for clients"), (name = "vision", description = "MediaPipe vision through the Python ML worker"), (name = "webrtc", description = "WebRTC signaling: sessions whose data channels carry API requests"))
)]
pub struct ApiDoc;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The whole API (and WebRTC signaling, when the server offers it).
    Full,
    /// WebRTC signaling and the health probes only (`--mode webrtc`): the API is reached through
    /// data channels.
    Signaling,
}

/// All routes with their guards, tracing and limits.
pub fn app(state: AppState) -> Router {
    app_for(state, Surface::Full)
}

/// The routes of `surface`, with their guards, tracing and limits.
pub fn app_for(state: AppState, surface: Surface) -> Router {
    let server = &state.config().server;
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(
            server.cors_origins.iter().filter_map(|o| o.parse().ok()),
        ))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static(conversation::HEADER),
            HeaderName::from_static(admission::PRIORITY_HEADER),
            HeaderName::from_static(admission::TIMEOUT_HEADER),
            HeaderName::from_static(context::HEADER),
            HeaderName::from_static(sessions::HEADER),
            HeaderName::from_static("traceparent"),
        ])
        .expose_headers([
            HeaderName::from_static(conversation::HEADER),
            HeaderName::from_static(context::RECORDS_HEADER),
            HeaderName::from_static(sessions::HEADER),
            HeaderName::from_static(responses::RECALLED_HEADER),
            REQUEST_ID,
        ]);
    let full = Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/vision/{task}", post(vision::analyze))
        .route("/v1/audio/transcriptions", post(audio::transcriptions))
        .route("/v1/rerank", post(rerank::rerank))
        .route("/v1/onnx/run", post(onnx::run))
        .route("/v1/onnx/{*id}", get(onnx::describe))
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/pull", post(pull::pull))
        // Ids of pulled models contain a `/` (`owner/name:Q4_K_M`).
        .route(
            "/v1/models/{*id}",
            get(models::get_model)
                .delete(pull::delete_model)
                .post(pull::model_action),
        )
        .route(
            "/v1/files/{*rest}",
            get(files::get_file).post(files::fetch_file),
        )
        .route("/v1/tokenize", post(tokenize::tokenize))
        .route("/v1/detokenize", post(tokenize::detokenize))
        .route(
            "/v1/documents",
            get(documents::list)
                .post(documents::create)
                .layer(DefaultBodyLimit::max(
                    usize::try_from(state.config().librarian.max_file_bytes)
                        .unwrap_or(usize::MAX)
                        .saturating_add(64 * 1024)
                        .max(server.max_body_bytes),
                )),
        )
        .route("/v1/documents/events", get(documents::events))
        .route(
            "/v1/documents/{id}",
            get(documents::get).delete(documents::delete),
        )
        .route("/v1/memory", get(memory::stats))
        .route("/v1/memory/search", post(memory::search))
        .route("/v1/memory/surprise", post(memory::surprise))
        .route("/v1/memory/transaction", post(memory::transaction))
        .route("/v1/memory/graph/entities", post(graph::upsert_entity))
        .route("/v1/memory/graph/entities/{entity}", get(graph::get_entity))
        .route("/v1/memory/graph/relations", post(graph::relate))
        .route(
            "/v1/memory/graph/relations/{id}",
            get(graph::get_relation).delete(graph::delete_relation),
        )
        .route("/v1/memory/graph/neighbourhood", post(graph::neighbourhood))
        .route("/v1/memory/graph/path", post(graph::path))
        .route("/v1/memory/graph/merge", post(graph::merge))
        .route("/v1/memory/graph/consolidate", post(graph::consolidate))
        .route("/v1/memory/graph/extract", post(graph::extract))
        .route(
            "/v1/memory/conversations/{conversation}/summarize",
            post(conversation::summarize_now),
        )
        .route("/v1/memory/{store}", get(memory::list).post(memory::create))
        .route(
            "/v1/memory/{store}/{id}",
            get(memory::get_one).delete(memory::delete_one),
        )
        .route("/v1/config", get(health::config))
        .route("/v1/router", get(health::router_status))
        .route("/v1/worker", get(health::worker_status))
        .route("/v1/analytics", get(health::analytics))
        .route("/v1/analytics/optimize", get(health::optimize))
        .route("/v1/feedback", post(health::feedback))
        .route(
            "/v1/sessions/{id}",
            get(sessions::get_session)
                .put(sessions::put_session)
                .delete(sessions::delete_session),
        )
        .route("/v1/responses", post(responses::create))
        .route(
            "/v1/responses/{id}",
            get(responses::retrieve).delete(responses::delete),
        )
        .route("/metrics", get(crate::metrics::serve))
        .merge(ollama::routes());
    let full = match state.config().agent.serve_mcp {
        true => full.route_service(
            "/mcp",
            tower::Layer::layer(
                &axum::middleware::from_fn(mcp::session_end_is_ok),
                mcp::service(&state),
            ),
        ),
        false => full,
    };
    let signaling = Router::new()
        .route("/v1/webrtc/offer", post(webrtc::offer))
        .route("/v1/webrtc/sessions", get(webrtc::list))
        .route(
            "/v1/webrtc/sessions/{id}",
            get(webrtc::get_one).delete(webrtc::close),
        )
        .route(
            "/v1/webrtc/sessions/{id}/candidates",
            post(webrtc::candidate),
        )
        .route("/webrtc", get(webrtc::page))
        .route("/webrtc.js", get(webrtc::script))
        .route("/v1/health", get(health::health))
        .route("/v1/health/ready", get(health::ready));
    let api = match surface {
        Surface::Full => full.merge(signaling),
        Surface::Signaling => signaling,
    }
    // After routing, so requests are counted by their route template.
    .route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::metrics::track,
    ))
    .merge(SwaggerUi::new("/docs").url("/api-doc/openapi.json", ApiDoc::openapi()))
    .fallback(|uri: Uri| async move { ApiError::route_not_found(uri.path()).into_response() })
    .method_not_allowed_fallback(|| async { ApiError::method_not_allowed().into_response() })
    .layer(DefaultBodyLimit::max(server.max_body_bytes))
    // A body that stalls mid-way fails its request rather than holding it open.
    .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        std::time::Duration::from_secs(server.body_timeout_secs),
    ));
    let guarded = api
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::guard,
        ))
        .with_state(state);
    guarded.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                tracing::info_span!("request", id = %id, method = %request.method(), path = %request.uri().path(), trace_id = tracing::field::Empty)
            }))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(axum::middleware::from_fn(security::response_headers))
            .layer(cors),
    )
}
