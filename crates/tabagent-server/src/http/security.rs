//! Request guards: Host allowlist (DNS rebinding), Origin check, API key.
//!
//! A web page on another origin can reach a loopback server through the user's browser; DNS
//! rebinding even makes it look same-origin by pointing an attacker's name at 127.0.0.1. So we
//! accept only Host names we serve under, only Origins we were told to trust (or our own), and,
//! when keys are set, only requests that carry one.

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::callers::Caller;
use crate::state::AppState;

/// Paths that answer without an API key (liveness probes, the API description, the WebRTC
/// page and its script: the page asks its user for a key).
const OPEN_PATHS: &[&str] = &["/v1/health", "/v1/health/ready", "/webrtc", "/webrtc.js"];

/// Runs every guard; the first that fails answers.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    // Native messaging or a WebRTC session in this process: the client was authenticated when
    // it connected, and the request carries its caller; no web page sent it.
    if request
        .extensions()
        .get::<crate::messages::TrustedTransport>()
        .is_some()
        && request.extensions().get::<Caller>().is_some()
    {
        return next.run(request).await;
    }
    let server = &state.config().server;
    let host = request_host(&request);
    if let Some(host) = &host {
        if !host_allowed(host, &server.host, &server.allowed_hosts) {
            return ApiError::forbidden(
                "host_not_allowed",
                format!("Host `{host}` is not allowed; add it to server.allowed_hosts to serve under that name"),
            )
            .into_response();
        }
    }
    if let Err(refusal) = cross_site_allowed(&request, &server.cors_origins) {
        return refusal.into_response();
    }
    if let Some(origin) = request.headers().get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same_origin = host
            .as_ref()
            .is_some_and(|h| origin == format!("http://{h}") || origin == format!("https://{h}"));
        if !same_origin && !server.cors_origins.iter().any(|allowed| allowed == origin) {
            return ApiError::forbidden(
                "origin_not_allowed",
                format!("Origin `{origin}` is not allowed; add it to server.cors_origins to let that page call the API"),
            )
            .into_response();
        }
    }
    let path = request.uri().path();
    let open =
        OPEN_PATHS.contains(&path) || path.starts_with("/docs") || path.starts_with("/api-doc");
    let caller = if state.callers().is_empty() {
        Some(Caller::anonymous())
    } else {
        bearer(request.headers()).and_then(|key| state.callers().identify(key))
    };
    match caller {
        Some(caller) => {
            request.extensions_mut().insert(caller);
        }
        None if open => {}
        None => return ApiError::unauthorized().into_response(),
    }
    next.run(request).await
}

/// HTML pages a link on another site may open (a top-level navigation, nothing else): they
/// do nothing until their user acts, and may not be framed.
const PAGES: &[&str] = &["/webrtc", "/docs"];

/// Refuses what a page on another site (or another port of this one) makes the browser send,
/// unless that page's Origin is listed in `server.cors_origins`. The browser marks such
/// requests with `Sec-Fetch-Site` even where it sends no Origin (an `<img>`, a no-cors fetch,
/// a form), so a page cannot use the user's browser to reach the API. Clients that are not
/// browsers send no `Sec-Fetch-Site`; `same-origin` and `none` (the user typed the address)
/// pass.
fn cross_site_allowed(request: &Request, cors_origins: &[String]) -> Result<(), ApiError> {
    let headers = request.headers();
    let Some(site) = headers.get("sec-fetch-site") else {
        return Ok(());
    };
    if matches!(site.as_bytes(), b"same-origin" | b"none") {
        return Ok(());
    }
    let listed = headers
        .get(ORIGIN)
        .and_then(|origin| origin.to_str().ok())
        .is_some_and(|origin| cors_origins.iter().any(|allowed| allowed == origin));
    if listed {
        return Ok(());
    }
    let navigation = request.method() == axum::http::Method::GET
        && headers.get("sec-fetch-mode").map(|m| m.as_bytes()) == Some(b"navigate")
        && headers.get("sec-fetch-dest").map(|d| d.as_bytes()) == Some(b"document");
    let path = request.uri().path();
    let page = PAGES
        .iter()
        .any(|page| path == *page || path.starts_with(&format!("{page}/")));
    if navigation && page {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "cross_site_request",
        "a page on another site (or another port) sent this request through the browser; \
         add its origin to server.cors_origins to let it call the API",
    ))
}

/// The policy of an HTML page that names none of its own (the API docs): its scripts and
/// styles from this server only (Swagger UI sets inline style attributes), its requests to this
/// server only, and never in a frame.
const PAGE_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Headers every answer carries: no page of this server may be framed (clickjacking), no answer
/// sniffed into another type, no address leaked to another site; an HTML page without a policy
/// of its own gets [`PAGE_POLICY`].
pub async fn response_headers(request: Request, next: Next) -> Response {
    use axum::http::header::{
        CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
        X_FRAME_OPTIONS,
    };
    use axum::http::HeaderValue;
    let mut response = next.run(request).await;
    let html = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    let headers = response.headers_mut();
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if html && !headers.contains_key(CONTENT_SECURITY_POLICY) {
        headers.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_POLICY),
        );
    }
    response
}

/// The Host the request was addressed to, with its port (HTTP/1 Host header or HTTP/2 authority).
fn request_host(request: &Request) -> Option<String> {
    request
        .headers()
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_string()))
        .map(|h| h.to_ascii_lowercase())
}

/// Whether `host` (as sent, maybe with a port) names this server.
fn host_allowed(host: &str, bind: &str, extra: &[String]) -> bool {
    if extra.iter().any(|h| h == "*") {
        return true;
    }
    let name = strip_port(host);
    let bind = bind
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let builtin = ["localhost", "127.0.0.1", "::1"];
    // Off loopback an API key is mandatory, and a rebinding page cannot know it: the key is the
    // guard there, and clients reach the server under names we cannot list.
    let loopback = bind
        .parse::<std::net::IpAddr>()
        .map_or(bind == "localhost", |ip| ip.is_loopback());
    !loopback
        || builtin.contains(&name)
        || name == bind
        || extra
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The key in `Authorization: Bearer KEY`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

#[cfg(test)]
mod tests {
    use super::{host_allowed, strip_port};

    #[test]
    fn loopback_names_pass_and_rebinding_names_do_not() {
        assert!(host_allowed("127.0.0.1:8080", "127.0.0.1", &[]));
        assert!(host_allowed("localhost:8080", "127.0.0.1", &[]));
        assert!(host_allowed("[::1]:8080", "127.0.0.1", &[]));
        assert!(!host_allowed("attacker.example:8080", "127.0.0.1", &[]));
        assert!(!host_allowed("box.lan:8080", "127.0.0.1", &[]));
        assert!(host_allowed(
            "box.lan:8080",
            "127.0.0.1",
            &["box.lan".to_string()]
        ));
        // Off loopback the mandatory API key guards instead.
        assert!(host_allowed("192.168.1.20:8080", "0.0.0.0", &[]));
        assert!(host_allowed("anything", "127.0.0.1", &["*".to_string()]));
    }

    #[test]
    fn ports_and_brackets_are_stripped() {
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("example.com:80"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
    }
}
