//! How connections are served: HTTPS with a certificate from the run's own authority
//! (a follower replicates over it with a read token), the time a client may take to
//! send a request. (The cap on long polls is in `long_polls.rs`: its gauge is
//! process-wide, and a follower here long-polls too.)

use std::io::{Read, Write};
use std::time::Duration;

use annals::Store;
use annals_server::follower::{FollowOptions, Follower, Leader};
use annals_server::{Role, ServerOptions, Spawned, TlsFiles, Tokens, Transport};
use annals_testkit::tally::add;
use annals_testkit::tls::Authority;
use annals_testkit::{wait_for, TestStore};

fn https(files: &annals_testkit::tls::ServerFiles) -> Transport {
    Transport {
        tls: Some(TlsFiles {
            cert: files.cert.clone(),
            key: files.key.clone(),
        }),
        ..Transport::default()
    }
}

/// A follower replicates from a leader served over HTTPS, trusting only the run's
/// authority, with a read token; a client that does not trust the authority, or that
/// speaks plain HTTP to the port, gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_replicates_over_https() {
    let authority = Authority::new("annals test authority");
    let files = authority.issue("leader", &["localhost", "127.0.0.1"]);
    let (leader_t, follower_t) = (
        TestStore::sqlite().await.expect("s"),
        TestStore::sqlite().await.expect("s"),
    );
    let leader = leader_t.open_with(|o| o.partitions(4)).await.expect("leader");
    let replica = follower_t.open_with(|o| o.partitions(4)).await.expect("follower");
    let options = ServerOptions {
        tokens: Tokens::none().with("r-token", Role::Read).expect("token"),
        transport: https(&files),
        ..ServerOptions::default()
    };
    let server = Spawned::start(leader.clone(), options).await.expect("serve");
    assert!(server.url().starts_with("https://"), "{}", server.url());

    let follower = Follower::start(
        replica.clone(),
        Leader {
            url: server.url().to_owned(),
            token: Some("r-token".into()),
            ca_file: Some(authority.cert()),
        },
        FollowOptions::default(),
    );
    for n in 0..20 {
        add(&leader, &format!("order-{n}"), 1).await;
    }
    wait_for("the follower to hold every record over HTTPS", async || {
        replica.record_count().await.expect("count") == 20
    })
    .await;
    follower.stop().await.expect("stop");

    let trusting =
        annals_client::Client::trusting(server.url(), Some("r-token".into()), Some(&authority.cert())).expect("client");
    assert_eq!(trusting.partitions().await.expect("partitions").partition_count, 4);
    let platform = annals_client::Client::new(server.url(), Some("r-token".into()));
    assert!(
        platform.partitions().await.is_err(),
        "a client that does not trust the authority was answered"
    );
    let clear = annals_client::Client::new(&server.url().replacen("https", "http", 1), Some("r-token".into()));
    assert!(
        clear.partitions().await.is_err(),
        "plain HTTP was answered on the HTTPS port"
    );
    server.stop().await.expect("stop");
}

/// A certificate that cannot be read stops the server with an error that names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_certificate_is_a_clear_error() {
    let store = Store::open("memory:").await.expect("store");
    let options = ServerOptions {
        transport: Transport {
            tls: Some(TlsFiles {
                cert: "/nonexistent/cert.pem".into(),
                key: "/nonexistent/key.pem".into(),
            }),
            ..Transport::default()
        },
        ..ServerOptions::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let failed = annals_server::serve(store, listener, options, std::future::pending()).await;
    let error = failed.expect_err("served without its certificate");
    assert!(error.to_string().contains("/nonexistent/cert.pem"), "{error}");
}

/// Reads from `stream` until the server closes it; what it sent. Fails if the server
/// keeps it open for 30 seconds.
fn until_closed(stream: &mut std::net::TcpStream) -> String {
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => String::from_utf8_lossy(&answer).into_owned(),
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
            String::from_utf8_lossy(&answer).into_owned()
        }
        Err(error) => panic!("the server kept a slow connection open: {error}"),
    }
}

/// A connection that sends nothing, headers that never end, or a kept-alive connection
/// left idle after its answer, is closed; a body that never arrives is answered 408
/// and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let store = Store::open("memory:").await.expect("store");
    let options = ServerOptions {
        transport: Transport {
            header_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(300),
            ..Transport::default()
        },
        ..ServerOptions::default()
    };
    let server = Spawned::start(store.clone(), options).await.expect("serve");
    let address = server.url().trim_start_matches("http://").to_owned();
    let results = tokio::task::spawn_blocking(move || {
        let mut silent = std::net::TcpStream::connect(&address).expect("connect");
        let silent_answer = until_closed(&mut silent);

        let mut slow_headers = std::net::TcpStream::connect(&address).expect("connect");
        slow_headers
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .expect("write");
        let slow_headers_answer = until_closed(&mut slow_headers);

        let mut slow_body = std::net::TcpStream::connect(&address).expect("connect");
        slow_body
            .write_all(
                b"POST /v1/streams/order-1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"expected_version\":",
            )
            .expect("write");
        let slow_body_answer = until_closed(&mut slow_body);
        let mut idle = std::net::TcpStream::connect(&address).expect("connect");
        idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let idle_answer = until_closed(&mut idle);
        assert!(idle_answer.starts_with("HTTP/1.1 200"), "{idle_answer}");
        (silent_answer, slow_headers_answer, slow_body_answer)
    })
    .await
    .expect("join");
    let (silent, slow_headers, slow_body) = results;
    assert!(!silent.contains("200 OK"), "{silent}");
    assert!(
        !slow_headers.contains("200 OK"),
        "incomplete headers were answered: {slow_headers}"
    );
    assert!(slow_body.starts_with("HTTP/1.1 408"), "{slow_body}");
    assert!(slow_body.contains("request_timeout"), "{slow_body}");
    assert_eq!(store.record_count().await.expect("count"), 0);
    server.stop().await.expect("stop");
}
