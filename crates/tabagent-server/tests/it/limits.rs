//! Connections a client holds open without finishing a request (slowloris): bounded in number,
//! in all and per address, and closed when their headers do not come in time; the server
//! keeps answering everyone else.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::server::Server;

/// How long a test waits for the server at most (a bound against hanging, not a measure).
const PATIENCE: Duration = Duration::from_secs(60);

fn address(server: &Server) -> SocketAddr {
    server.url.trim_start_matches("http://").parse().unwrap()
}

/// A connection to `server` from `from` (any 127.x.y.z: loopback answers them all).
async fn connect(server: &Server, from: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(address(server)).await.unwrap()
}

/// Half a request: headers that never end.
async fn half_open(server: &Server, from: &str) -> TcpStream {
    let mut stream = connect(server, from).await;
    stream
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n")
        .await
        .unwrap();
    stream
}

/// Sends a whole `GET /v1/health` from `from`; the status line's code, or `None` when the
/// server closed the connection without answering.
async fn health_from(server: &Server, from: &str) -> Option<u16> {
    let mut stream = connect(server, from).await;
    let request = "GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    // Closed at once by the server, the write itself may fail: that is no answer too.
    if stream.write_all(request.as_bytes()).await.is_err() {
        return None;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the server neither answered nor closed the connection");
    if read.is_err() && answer.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_bounded_per_address_and_in_all_and_others_are_served() {
    let server = Server::start_with(
        &[],
        &[
            ("TABAGENT_SERVER__MAX_CONNECTIONS", "24"),
            ("TABAGENT_SERVER__MAX_CONNECTIONS_PER_IP", "16"),
            ("TABAGENT_SERVER__HEADER_TIMEOUT_SECS", "600"),
        ],
        |_| {},
    );
    // One address holds as many half-open connections as it may...
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(half_open(&server, "127.0.0.2").await);
    }
    // ...and gets no more, while another address is served.
    assert_eq!(health_from(&server, "127.0.0.2").await, None);
    assert_eq!(health_from(&server, "127.0.0.3").await, Some(200));
    // Eight more from a third address fill the server: then nobody new gets in.
    for _ in 0..8 {
        held.push(half_open(&server, "127.0.0.4").await);
    }
    assert_eq!(health_from(&server, "127.0.0.5").await, None);
    // A place given back is free again (once the server has seen the close).
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if health_from(&server, "127.0.0.5").await == Some(200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed connection's place never came back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_headers_never_end_is_closed() {
    let server = Server::start_with(
        &[],
        &[("TABAGENT_SERVER__HEADER_TIMEOUT_SECS", "1")],
        |_| {},
    );
    let mut slow = half_open(&server, "127.0.0.2").await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, slow.read_to_end(&mut rest))
        .await
        .expect("the server kept a request with unfinished headers open");
    // Closed without an answer (or reset): never a response to half a request.
    assert!(read.is_err() || rest.is_empty() || !rest.starts_with(b"HTTP/1.1 200"));
    // A client that finishes its request is answered as usual.
    assert_eq!(health_from(&server, "127.0.0.3").await, Some(200));
}
