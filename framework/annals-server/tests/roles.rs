//! Roles and health probes: every route refuses a token whose role is below its own
//! (and changes nothing), a follower replicates with a read token, and the probes say
//! whether the server is up and whether it can serve.

use annals::{AppendRequest, ExpectedVersion, NewEvent, Store, StreamId};
use annals_server::follower::{FollowOptions, Follower, Leader};
use annals_server::{Role, ServerOptions, Spawned, Tokens};
use annals_testkit::{wait_for, TestStore};
use reqwest::{Client, StatusCode};
use serde_json::Value;

/// Every route, with a body it accepts and the role it needs (`None`: open).
const ROUTES: &[(&str, &str, &str, Option<Role>)] = &[
    ("GET", "/v1/streams", "", Some(Role::Read)),
    ("GET", "/v1/streams/order-1/events", "", Some(Role::Read)),
    (
        "POST",
        "/v1/streams/order-1/events",
        r#"{"expected_version":"any","events":[{"type":"Placed","data":{}}]}"#,
        Some(Role::Write),
    ),
    ("GET", "/v1/partitions", "", Some(Role::Read)),
    ("GET", "/v1/partitions/0/events", "", Some(Role::Read)),
    ("GET", "/v1/groups", "", Some(Role::Read)),
    ("GET", "/v1/groups/tally", "", Some(Role::Read)),
    (
        "GET",
        "/v1/groups/tally/wait?partition=0&offset=0",
        "",
        Some(Role::Read),
    ),
    (
        "POST",
        "/v1/groups/tally/reset",
        r#"{"to":"earliest"}"#,
        Some(Role::Admin),
    ),
    ("POST", "/v1/groups/tally/pause", "{}", Some(Role::Admin)),
    ("POST", "/v1/groups/tally/resume", "{}", Some(Role::Admin)),
    ("GET", "/v1/dead-letters", "", Some(Role::Read)),
    ("POST", "/v1/dead-letters/1/retry", "", Some(Role::Admin)),
    ("POST", "/v1/dead-letters/1/skip", "", Some(Role::Admin)),
    (
        "GET",
        "/v1/events/0193a4d2-7c1e-7000-8000-00000000c0de",
        "",
        Some(Role::Read),
    ),
    ("GET", "/v1/keys", "", Some(Role::Read)),
    ("GET", "/v1/whoami", "", Some(Role::Read)),
    ("GET", "/v1/samples", "", Some(Role::Read)),
    ("DELETE", "/v1/streams/order-1", "", Some(Role::Admin)),
    ("DELETE", "/v1/subjects/customer-1", "", Some(Role::Admin)),
    ("GET", "/metrics", "", Some(Role::Read)),
    ("GET", "/health", "", None),
    ("GET", "/health/live", "", None),
    ("GET", "/health/ready", "", None),
    ("GET", "/", "", None),
    ("GET", "/console/uPlot.iife.min.js", "", None),
    ("GET", "/console/uPlot.min.css", "", None),
];

const TOKENS: [(&str, Role); 3] = [
    ("r-token", Role::Read),
    ("w-token", Role::Write),
    ("a-token", Role::Admin),
];

fn tokens() -> Tokens {
    TOKENS
        .iter()
        .try_fold(Tokens::none(), |tokens, (token, role)| tokens.with(*token, *role))
        .expect("tokens")
}

async fn call(http: &Client, base: &str, (method, path, body): (&str, &str, &str), token: Option<&str>) -> StatusCode {
    let url = format!("{base}{path}");
    let mut request = match method {
        "GET" => http.get(url),
        "DELETE" => http.delete(url),
        _ => http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_owned()),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    if status == StatusCode::FORBIDDEN {
        let body: Value = response.json().await.expect("a JSON error");
        assert_eq!(body["error"], "forbidden", "{method} {path}: {body}");
        assert!(body["role_needed"].is_string(), "{method} {path}: {body}");
    }
    status
}

/// Each route with no token, a wrong one, and each role's: 401, 403 below the route's
/// role (with nothing written), and through at or above it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_asks_for_its_role() {
    let store = Store::open("memory:").await.expect("store");
    let options = ServerOptions {
        tokens: tokens(),
        ..ServerOptions::default()
    };
    let server = Spawned::start(store.clone(), options).await.expect("serve");
    let http = Client::new();
    for &(method, path, body, needed) in ROUTES {
        let route = (method, path, body);
        for token in [None, Some("wrong")] {
            let status = call(&http, server.url(), route, token).await;
            match needed {
                Some(_) => assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with {token:?}"),
                None => assert!(status.is_success(), "{method} {path} is open, answered {status}"),
            }
        }
        for (token, role) in TOKENS {
            let written = store.record_count().await.expect("count");
            let status = call(&http, server.url(), route, Some(token)).await;
            if needed.is_some_and(|needed| role < needed) {
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} with the {role} role");
                assert_eq!(
                    store.record_count().await.expect("count"),
                    written,
                    "{method} {path} refused to {role} wrote something"
                );
            } else {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{method} {path} refused the {role} role: {status}"
                );
            }
        }
    }
    // The appends by the write and admin tokens went through, and the admin's deletion
    // and erasure records.
    assert_eq!(store.record_count().await.expect("count"), 4);
    server.stop().await.expect("stop");
}

/// A follower needs only the read role on its leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_replicates_with_a_read_token() {
    let (leader_t, follower_t) = (
        TestStore::sqlite().await.expect("s"),
        TestStore::sqlite().await.expect("s"),
    );
    let leader = leader_t.open_with(|o| o.partitions(4)).await.expect("leader");
    let replica = follower_t.open_with(|o| o.partitions(4)).await.expect("follower");
    let options = ServerOptions {
        tokens: tokens(),
        ..ServerOptions::default()
    };
    let server = Spawned::start(leader.clone(), options).await.expect("serve");
    let read_only = Leader {
        token: Some("r-token".into()),
        ..Leader::at(server.url())
    };
    let follower = Follower::start(replica.clone(), read_only, FollowOptions::default());
    for n in 0..20 {
        let stream = StreamId::new(format!("order-{n}")).expect("id");
        let append = AppendRequest::new(stream, ExpectedVersion::NoStream)
            .event(NewEvent::json("Placed", &serde_json::json!({ "n": n })).expect("event"));
        leader.append(append).await.expect("append");
    }
    wait_for("the follower to hold every record", async || {
        replica.record_count().await.expect("count") == 20
    })
    .await;
    assert_eq!(
        replica.high_watermarks().await.expect("hw"),
        leader.high_watermarks().await.expect("hw")
    );
    follower.stop().await.expect("stop");
    server.stop().await.expect("stop");
}

async fn get(http: &Client, url: String) -> (StatusCode, Value) {
    let response = http.get(url).send().await.expect("GET");
    (response.status(), response.json().await.expect("JSON"))
}

/// Live answers while the process serves; ready only while the store answers, and on
/// a follower only while it fetches from its leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_store_and_the_leader() {
    let http = Client::new();
    let t = TestStore::sqlite().await.expect("s");
    let store = t.open().await;
    let server = Spawned::start(store.clone(), ServerOptions::default())
        .await
        .expect("serve");
    let (status, body) = get(&http, format!("{}/health/ready", server.url())).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ready")),
        "{body}"
    );
    store.close().await;
    let (status, body) = get(&http, format!("{}/health/ready", server.url())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not_ready");
    let (status, _) = get(&http, format!("{}/health/live", server.url())).await;
    assert_eq!(status, StatusCode::OK, "live does not depend on the store");
    server.stop().await.expect("stop");

    // A follower whose leader is not there is live and not ready; once the leader
    // serves, it becomes ready.
    let (leader_t, follower_t) = (
        TestStore::sqlite().await.expect("s"),
        TestStore::sqlite().await.expect("s"),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let replica = follower_t.open_with(|o| o.partitions(4)).await.expect("follower");
    let follower = Follower::start(
        replica.clone(),
        Leader::at(format!("http://{address}")),
        FollowOptions::default(),
    );
    let options = ServerOptions {
        follower: Some(follower.handle()),
        ..ServerOptions::default()
    };
    let served = Spawned::start(replica.clone(), options).await.expect("serve");
    let ready = format!("{}/health/ready", served.url());
    let (status, body) = get(&http, ready.clone()).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "ready without its leader: {body}"
    );
    assert!(
        body["reason"].as_str().is_some_and(|r| r.contains("follower")),
        "{body}"
    );
    assert!(
        !body.to_string().contains(&address.to_string()),
        "the probe, open to anyone, named the leader: {body}"
    );

    let leader = leader_t.open_with(|o| o.partitions(4)).await.expect("leader");
    let listener = tokio::net::TcpListener::bind(address).await.expect("the leader's port");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let leader_server = tokio::spawn(annals_server::serve(
        leader.clone(),
        listener,
        ServerOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));
    wait_for("the follower to be ready", async || {
        get(&http, ready.clone()).await.0 == StatusCode::OK
    })
    .await;
    follower.stop().await.expect("stop");
    served.stop().await.expect("stop");
    let _ = stop.send(());
    leader_server.await.expect("join").expect("serve");
}
