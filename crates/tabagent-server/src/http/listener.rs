//! The HTTP listener: accepts connections within bounds and serves the app on each with a
//! deadline for every request's headers, so that clients holding connections open without
//! finishing a request (slowloris) cannot take the server down. At most `max_connections`
//! are open, and at most `max_connections_per_ip` from one address; a connection beyond is
//! closed at once. A request's headers — and on a kept-alive connection, the wait for the next
//! request — must arrive within `header_timeout`; a request body may pause at most
//! `body_timeout` between pieces (a layer of the app, `http::app_for`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;

/// How many connections, and how long a request's headers may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_timeout: Duration,
}

/// Open connections, by peer address.
#[derive(Default)]
struct Open {
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's place among the open ones; given back when dropped.
struct Place {
    open: Arc<Open>,
    ip: IpAddr,
}

impl Open {
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Option<Place> {
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = by_ip.values().sum();
        let from_ip = by_ip.get(&ip).copied().unwrap_or(0);
        if total >= limits.max_connections || from_ip >= limits.max_connections_per_ip {
            return None;
        }
        by_ip.insert(ip, from_ip + 1);
        Some(Place {
            open: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut by_ip = self.open.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = by_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the requests in flight
/// finish (each connection closes after its current request).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let open = Arc::new(Open::default());
    // Dropped when serving ends: each connection then shuts down gracefully; the receivers the
    // connections hold tell when the last is gone.
    let (stop, stopping) = tokio::sync::watch::channel(());
    let (gone, all_gone) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, most likely: the listener is fine, the moment
                    // is not. Wait a little rather than spin.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(place) = open.admit(peer.ip(), &limits) else {
            tracing::debug!(%peer, "connection closed at once: too many open");
            drop(stream);
            continue;
        };
        // Streamed tokens are small writes: send each at once instead of waiting for an ACK.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let service = app
            .clone()
            .map_request(|request: Request<Incoming>| request.map(Body::new));
        let service = TowerToHyperService::new(service);
        let mut stopping = stopping.clone();
        let still_serving = all_gone.clone();
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(limits.header_timeout)
                .keep_alive_timeout(limits.header_timeout);
            let mut connection = std::pin::pin!(
                builder.serve_connection_with_upgrades(TokioIo::new(stream), service)
            );
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.as_mut().await
                }
            };
            if let Err(err) = served {
                tracing::trace!(error = %err, "connection ended");
            }
            drop((place, still_serving));
        });
    }
    drop(listener);
    drop(stop);
    drop(all_gone);
    gone.closed().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_bounded_in_all_and_per_address() {
        let limits = Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            header_timeout: Duration::from_secs(1),
        };
        let open = Arc::new(Open::default());
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let first = open.admit(a, &limits).unwrap();
        let _second = open.admit(a, &limits).unwrap();
        assert!(open.admit(a, &limits).is_none(), "per address");
        let _third = open.admit(b, &limits).unwrap();
        assert!(open.admit(b, &limits).is_none(), "in all");
        drop(first);
        assert!(
            open.admit(a, &limits).is_some(),
            "a place given back is free again"
        );
    }
}
