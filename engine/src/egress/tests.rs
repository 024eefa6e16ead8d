use std::io::ErrorKind;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

fn allow(rules: &[&str]) -> EgressPolicy {
    let rules: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
    EgressPolicy::new(true, &rules).unwrap()
}

#[test]
fn private_addresses_in_every_spelling_are_denied_by_default() {
    let p = EgressPolicy::default();
    for url in [
        "http://127.0.0.1:8080/bot",
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://10.0.0.5/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://[::1]/",
        "http://[::]/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[64:ff9b::a00:1]/",
        "http://localhost:9000/",
        "http://LocalHost./",
        "http://api.localhost/",
    ] {
        assert!(
            matches!(p.check_url(url), Err(EgressError::Denied(_))),
            "{url} passed"
        );
    }
    for url in [
        "https://api.telegram.org/bot",
        "https://93.184.216.34/",
        "http://[2606:4700::1111]/",
        "http://100.128.0.1/",
    ] {
        assert_eq!(p.check_url(url), Ok(()), "{url}");
    }
    for url in ["ftp://example.com/", "not a url", "file:///etc/passwd"] {
        assert!(
            matches!(p.check_url(url), Err(EgressError::BadUrl(_))),
            "{url}"
        );
    }
}

#[test]
fn allowed_ranges_and_hosts_pass_and_nothing_else() {
    let p = allow(&["127.0.0.0/8", "fd00::/8", "10.1.2.3", "crm.internal"]);
    assert_eq!(p.check_url("http://127.0.0.1:9/"), Ok(()));
    assert_eq!(p.check_url("http://localhost:9/"), Ok(()));
    assert_eq!(p.check_url("http://[fd12::1]/"), Ok(()));
    assert_eq!(p.check_url("http://10.1.2.3/"), Ok(()));
    assert_eq!(p.check_url("http://CRM.internal./"), Ok(()));
    assert!(p.check_url("http://10.1.2.4/").is_err());
    assert!(p.check_url("http://192.168.0.1/").is_err());
    assert!(p.check_url("http://[fe80::1]/").is_err());
    let open = EgressPolicy::new(false, &[]).unwrap();
    assert_eq!(open.check_url("http://169.254.169.254/"), Ok(()));
    for bad in ["10.0.0.0/33", "::/129", "not a host!", "", "1.2.3.4/x"] {
        assert!(
            matches!(
                EgressPolicy::new(true, &[bad.into()]),
                Err(EgressError::BadRule(_))
            ),
            "{bad}"
        );
    }
}

/// A listener on loopback; non-blocking, so [`nobody_connected`] can ask its backlog.
fn listener() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// Reads the request head, then writes `answer`.
async fn answer(s: &mut tokio::net::TcpStream, answer: &[u8]) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client closed before sending a request");
        head.extend_from_slice(&buf[..n]);
    }
    s.write_all(answer).await.unwrap();
}

fn nobody_connected(l: &std::net::TcpListener) -> bool {
    matches!(l.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

#[tokio::test]
async fn a_name_that_resolves_to_a_denied_address_is_never_connected() {
    let (l, port) = listener();
    let client = builder(Some(&EgressPolicy::default()), Timeouts::default())
        .no_proxy()
        .build()
        .unwrap();
    let e = client
        .get(format!("http://localhost:{port}/"))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    assert!(nobody_connected(&l), "the listener saw a connection");

    // Allowed, the same name reaches the listener.
    let client = builder(Some(&allow(&["127.0.0.0/8", "::1"])), Timeouts::default())
        .no_proxy()
        .build()
        .unwrap();
    let l = TcpListener::from_std(l).unwrap();
    let serve = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        answer(
            &mut s,
            b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n",
        )
        .await;
    });
    let r = client
        .get(format!("http://localhost:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    serve.await.unwrap();
}

#[tokio::test]
async fn a_redirect_to_a_denied_address_is_not_followed() {
    let (l, port) = listener();
    let (target, target_port) = listener();
    let l = TcpListener::from_std(l).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let location = format!(
            "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{target_port}/\r\ncontent-length: 0\r\n\r\n"
        );
        answer(&mut s, location.as_bytes()).await;
        // Held open until the client has given up on the redirect.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    // Only the name is allowed, not the address it redirects to.
    let client = builder(Some(&allow(&["localhost"])), Timeouts::default())
        .no_proxy()
        .build()
        .unwrap();
    let e = client
        .get(format!("http://localhost:{port}/"))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_redirect(), "{e:?}");
    assert!(nobody_connected(&target), "the redirect was followed");
}

#[tokio::test]
async fn a_peer_that_never_answers_fails_after_the_read_timeout() {
    let (l, port) = listener();
    let l = TcpListener::from_std(l).unwrap();
    tokio::spawn(async move {
        let (_held, _) = l.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let timeouts = Timeouts {
        read: Duration::from_millis(300),
        ..Timeouts::default()
    };
    let client = builder(None, timeouts).no_proxy().build().unwrap();
    let e = tokio::time::timeout(
        Duration::from_secs(30),
        client.get(format!("http://127.0.0.1:{port}/")).send(),
    )
    .await
    .expect("the call hangs instead of timing out")
    .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
}
