//! The listener's limits over real TCP: the header-read timeout and the connection cap.

use std::time::Duration;

use parley::listen::ConnectionLimits;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A client that sends part of its headers and stops is disconnected once the timeout
/// passes; one that sends them in time is answered.
#[tokio::test]
async fn partial_headers_are_cut_off_after_the_timeout() {
    let t = TestServer::start_with(|c| {
        c.connections = ConnectionLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ConnectionLimits::default()
        }
    })
    .await;
    let addr = t.server.as_ref().unwrap().addr;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: parley\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    // Bounded so the old behaviour (held for ever) fails instead of hanging.
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut answer)).await;
    let read = read.expect("the server still holds the connection");
    assert!(
        read.is_err() || !String::from_utf8_lossy(&answer).contains("200 OK"),
        "{read:?}: {}",
        String::from_utf8_lossy(&answer)
    );

    let mut quick = TcpStream::connect(addr).await.unwrap();
    quick
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: parley\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    quick.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

/// Past the cap a new connection is not served until an open one closes.
#[tokio::test]
async fn connections_past_the_cap_wait_for_one_to_close() {
    let t = TestServer::start_with(|c| {
        c.connections = ConnectionLimits {
            max_connections: 2,
            ..ConnectionLimits::default()
        }
    })
    .await;
    let addr = t.server.as_ref().unwrap().addr;
    let held_a = TcpStream::connect(addr).await.unwrap();
    let _held_b = TcpStream::connect(addr).await.unwrap();
    // Let the server accept both before the third comes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = t.url("/healthz");
    let third = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "a third connection was served");
    drop(held_a);
    let status = tokio::time::timeout(Duration::from_secs(20), third)
        .await
        .expect("served once a connection closed")
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}
