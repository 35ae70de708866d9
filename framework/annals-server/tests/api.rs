//! The HTTP API v1 on real HTTP over loopback, against real SQLite and PostgreSQL
//! stores: every route, every error code, auth, limits, the long poll, robustness and
//! graceful shutdown.

use std::time::{Duration, Instant};

use annals::group::{GroupMember, GroupOptions};
use annals::Store;
use annals_server::{Role, ServerOptions, Spawned, Tokens};
use annals_testkit::tally::{add, add_poison, Tally};
use annals_testkit::TestStore;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

struct Server {
    base: String,
    store: Store,
    running: Spawned,
    http: Client,
    token: Option<String>,
}

impl Server {
    async fn start(store: Store, token: Option<&str>, max_body_bytes: usize) -> Server {
        let tokens = token.map_or_else(Tokens::none, |token| {
            Tokens::none().with(token, Role::Admin).expect("a token")
        });
        let options = ServerOptions {
            tokens,
            max_body_bytes,
            ..ServerOptions::default()
        };
        let running = Spawned::start(store.clone(), options).await.expect("serve");
        Server {
            base: running.url().to_owned(),
            store,
            running,
            http: Client::new(),
            token: token.map(str::to_owned),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.authed(self.http.get(self.url(path))).send().await.expect("GET");
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    async fn post(&self, path: &str, body: &str) -> (StatusCode, Value) {
        let response = self
            .authed(self.http.post(self.url(path)))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("POST");
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    async fn stop(self) {
        self.running.stop().await.expect("server");
    }
}

annals_testkit::on_sql_engines!(
    append_and_read,
    every_error_is_json_and_writes_nothing,
    the_long_poll_is_woken_by_an_append,
    groups_and_dead_letters,
    bearer_tokens,
    metrics_and_health,
    browsing_routes,
);

/// Ids, times and other run-dependent values, replaced for snapshots.
fn redact(mut value: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map.iter_mut() {
                    if [
                        "id",
                        "recorded_at",
                        "command_id",
                        "correlation_id",
                        "joined_at",
                        "heartbeat_at",
                        "created_at",
                    ]
                    .contains(&key.as_str())
                    {
                        *inner = json!("[redacted]");
                    } else {
                        walk(inner);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

async fn append_and_read(t: TestStore) {
    let server = Server::start(t.open().await, None, 1 << 20).await;
    let body = r#"{"expected_version": "no_stream", "command_id": "0193a4d2-7c1e-7000-8000-00000000c0de",
                   "events": [{"type": "OrderPlaced", "data": {"lines": 2}, "metadata": {"user": "ann"}},
                              {"type": "LinesAdded", "data": [1, 2]}]}"#;
    let (status, placed) = server.post("/v1/streams/order-1/events", body).await;
    assert_eq!(status, StatusCode::CREATED);
    insta::assert_json_snapshot!("append", placed);
    let (status, again) = server.post("/v1/streams/order-1/events", body).await;
    assert_eq!(status, StatusCode::OK, "a retried command id is a duplicate");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["first_offset"], placed["first_offset"]);

    let (status, read) = server.get("/v1/streams/order-1/events?from_version=1&limit=10").await;
    assert_eq!(status, StatusCode::OK);
    insta::assert_json_snapshot!("read_stream", redact(read));
    let (_, page) = server.get("/v1/streams/order-1/events?from_version=2").await;
    assert_eq!(page["events"].as_array().map(Vec::len), Some(1));

    let (status, partitions) = server.get("/v1/partitions").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(partitions["partition_count"], 16);
    assert_eq!(partitions["partitions"][6], json!({"partition": 6, "next_offset": 2}));
    assert_eq!(
        (partitions["role"].as_str(), partitions["leader_epoch"].as_u64()),
        (Some("leader"), Some(0))
    );

    let (status, fetched) = server.get("/v1/partitions/6/events?from_offset=1&limit=5").await;
    assert_eq!(status, StatusCode::OK);
    insta::assert_json_snapshot!("fetch", redact(fetched));
    // Payloads come back as the exact text appended: key order, spacing, number forms.
    let odd = r#"{"z": 1, "a": [1.0, 1e2, 12345678901234567890123]}"#;
    server
        .post(
            "/v1/streams/odd-1/events",
            &format!(r#"{{"expected_version":"any","events":[{{"type":"T","data":{odd}}}]}}"#),
        )
        .await;
    for path in ["/v1/streams/odd-1/events", "/v1/partitions/1/events?from_offset=0"] {
        let text = server
            .http
            .get(server.url(path))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("text");
        assert!(
            text.contains(&format!(r#""data":{odd}"#)),
            "{path} re-encoded the payload: {text}"
        );
    }
    let (_, streams) = server.get("/v1/streams?category=order").await;
    assert_eq!(streams["streams"][0]["stream"], "order-1");
    server.stop().await;
}

async fn every_error_is_json_and_writes_nothing(t: TestStore) {
    let server = Server::start(t.open().await, None, 4096).await;
    server
        .post(
            "/v1/streams/order-1/events",
            r#"{"expected_version":"any","events":[{"type":"A","data":1}]}"#,
        )
        .await;
    let before = server.store.high_watermarks().await.expect("watermarks");
    let cases: Vec<(&str, &str, Option<String>, StatusCode, &str)> = vec![
        ("POST", "/v1/streams/order-1/events", Some("{not json".into()), StatusCode::BAD_REQUEST, "bad_request"),
        ("POST", "/v1/streams/order-1/events", Some(r#"{"events":[]}"#.into()), StatusCode::BAD_REQUEST, "bad_request"),
        ("POST", "/v1/streams/order-1/events", Some(r#"{"expected_version":"any","events":[]}"#.into()), StatusCode::BAD_REQUEST, "bad_request"),
        ("POST", "/v1/streams/order-1/events", Some(r#"{"expected_version":"sometimes","events":[{"type":"A","data":1}]}"#.into()), StatusCode::BAD_REQUEST, "bad_request"),
        ("POST", "/v1/streams/order-1/events", Some(r#"{"expected_version":"any","events":[{"type":"","data":1}]}"#.into()), StatusCode::BAD_REQUEST, "bad_request"),
        ("POST", "/v1/streams/order-1/events", Some(r#"{"expected_version":"any","extra":1,"events":[{"type":"A","data":1}]}"#.into()), StatusCode::BAD_REQUEST, "bad_request"),
        ("POST", "/v1/streams/bad%20id/events", Some(r#"{"expected_version":"any","events":[{"type":"A","data":1}]}"#.into()), StatusCode::BAD_REQUEST, "bad_request"),
        ("POST", "/v1/streams/order-1/events", Some(r#"{"expected_version":5,"events":[{"type":"A","data":1}]}"#.into()), StatusCode::CONFLICT, "wrong_expected_version"),
        ("POST", "/v1/streams/order-2/events", Some(r#"{"expected_version":"any","command_id":"0193a4d2-7c1e-7000-8000-0000000000aa","events":[{"type":"A","data":1}]}"#.into()), StatusCode::CREATED, ""),
        ("POST", "/v1/streams/order-3/events", Some(r#"{"expected_version":"any","command_id":"0193a4d2-7c1e-7000-8000-0000000000aa","events":[{"type":"A","data":1}]}"#.into()), StatusCode::CONFLICT, "command_id_conflict"),
        ("POST", "/v1/streams/order-1/events", Some(format!(r#"{{"expected_version":"any","events":[{{"type":"A","data":"{}"}}]}}"#, "x".repeat(5000))), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        ("POST", "/v1/streams/order-1/events", Some(format!(r#"{{"expected_version":"any","events":[{{"type":"A","data":{}{}}}]}}"#, "[".repeat(300), "]".repeat(300))), StatusCode::BAD_REQUEST, "json_too_deep"),
        ("GET", "/v1/streams/order-404/events", None, StatusCode::NOT_FOUND, "not_found"),
        ("GET", "/v1/streams/order-1/events?from_version=x", None, StatusCode::BAD_REQUEST, "bad_request"),
        ("GET", "/v1/partitions/16/events", None, StatusCode::NOT_FOUND, "not_found"),
        ("GET", "/v1/partitions/minus/events", None, StatusCode::BAD_REQUEST, "bad_request"),
        ("GET", "/v1/groups/nobody", None, StatusCode::NOT_FOUND, "not_found"),
        ("POST", "/v1/groups/nobody/reset", Some(r#"{"to":"earliest"}"#.into()), StatusCode::NOT_FOUND, "not_found"),
        ("POST", "/v1/groups/nobody/reset", Some(r#"{"to":"yesterday"}"#.into()), StatusCode::BAD_REQUEST, "bad_request"),
        ("POST", "/v1/dead-letters/99/retry", None, StatusCode::NOT_FOUND, "not_found"),
        ("GET", "/v1/nothing-here", None, StatusCode::NOT_FOUND, "not_found"),
        ("DELETE", "/v1/partitions", None, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    ];
    let mut seen = Vec::new();
    for (method, path, body, status, code) in cases {
        let request = server.http.request(method.parse().expect("method"), server.url(path));
        let request = match body {
            Some(body) => request.header("content-type", "application/json").body(body),
            None => request,
        };
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), status, "{method} {path}");
        let body: Value = response.json().await.expect("every answer is JSON");
        if !code.is_empty() {
            assert_eq!(body["error"], code, "{method} {path}: {body}");
            assert!(body["message"].is_string(), "{method} {path}: {body}");
            seen.push(json!({"request": format!("{method} {path}"), "status": status.as_u16(), "body": body}));
        }
    }
    insta::assert_json_snapshot!("errors", seen);
    let mut after = server.store.high_watermarks().await.expect("watermarks");
    // The one successful append (order-2) is the only change.
    let order_2 = (annals::partition_for(&annals::StreamId::new("order-2").expect("id"), 16)).index();
    after[order_2] -= 1;
    assert_eq!(before, after, "an error wrote something");
    server.stop().await;
}

/// The routes the console browses with: a record by event id, reads from a time,
/// streams by prefix, a partition's records by type; and their bad input.
async fn browsing_routes(t: TestStore) {
    let server = Server::start(t.open().await, None, 1 << 20).await;
    for (stream, kind) in [
        ("acct-1", "Opened"),
        ("acct-10", "Opened"),
        ("acct-2", "Opened"),
        ("acct-1", "Closed"),
    ] {
        let body = format!(r#"{{"expected_version":"any","events":[{{"type":"{kind}","data":{{}}}}]}}"#);
        assert_eq!(
            server.post(&format!("/v1/streams/{stream}/events"), &body).await.0,
            StatusCode::CREATED
        );
    }
    let (_, read) = server.get("/v1/streams/acct-1/events").await;
    let closed = read["events"][1].clone();
    let (status, found) = server
        .get(&format!("/v1/events/{}", closed["id"].as_str().expect("id")))
        .await;
    assert_eq!((status, &found), (StatusCode::OK, &closed));
    let time = closed["recorded_at"].as_str().expect("time");
    let (_, from_time) = server.get(&format!("/v1/streams/acct-1/events?from_time={time}")).await;
    assert_eq!(from_time["events"].as_array().map(Vec::len), Some(1), "{from_time}");
    let partition = closed["partition"].as_u64().expect("partition");
    let (_, at) = server
        .get(&format!("/v1/partitions/{partition}/events?from_time={time}"))
        .await;
    assert_eq!(at["events"][0], closed, "{at}");
    let (_, typed) = server
        .get(&format!("/v1/partitions/{partition}/events?type=Closed,Gone"))
        .await;
    assert_eq!(typed["events"].as_array().map(Vec::len), Some(1), "{typed}");
    let (_, prefixed) = server.get("/v1/streams?prefix=acct-1").await;
    let ids: Vec<&str> = prefixed["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .filter_map(|s| s["stream"].as_str())
        .collect();
    assert_eq!(ids, ["acct-1", "acct-10"]);

    let before = server.store.high_watermarks().await.expect("watermarks");
    for (path, status, code) in [
        ("/v1/events/not-a-uuid", StatusCode::BAD_REQUEST, "bad_request"),
        (
            "/v1/events/0193a4d2-7c1e-7000-8000-0000000000aa",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/partitions/0/events?from_time=yesterday",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/streams/acct-1/events?from_time=12",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/streams?prefix=acct&category=acct",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/partitions/0/events?type=Opened&sealed=true",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/partitions/16/events?type=Opened",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let (answered, body) = server.get(path).await;
        assert_eq!(
            (answered, body["error"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
    assert_eq!(server.store.high_watermarks().await.expect("watermarks"), before);
    server.stop().await;
}

async fn the_long_poll_is_woken_by_an_append(t: TestStore) {
    let server = Server::start(t.open().await, None, 1 << 20).await;
    let p = annals::partition_for(&annals::StreamId::new("order-9").expect("id"), 16);
    let url = server.url(&format!("/v1/partitions/{p}/events?from_offset=0&wait_ms=20000"));
    let waiting = {
        let http = server.http.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let body: Value = http.get(url).send().await.expect("GET").json().await.expect("JSON");
            (started.elapsed(), body)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the fetch returned before anything was appended"
    );
    server
        .post(
            "/v1/streams/order-9/events",
            r#"{"expected_version":"any","events":[{"type":"A","data":1}]}"#,
        )
        .await;
    let (waited, body) = waiting.await.expect("fetch");
    assert!(
        waited < Duration::from_secs(10),
        "the append did not wake the fetch ({waited:?})"
    );
    assert_eq!(body["events"][0]["stream"], "order-9");
    assert_eq!(
        (body["next_offset"].as_u64(), body["high_watermark"].as_u64()),
        (Some(1), Some(1))
    );
    // Nothing new: an immediate answer without wait_ms.
    let (_, empty) = server.get(&format!("/v1/partitions/{p}/events?from_offset=1")).await;
    assert_eq!(empty["events"], json!([]));
    server.stop().await;
}

async fn groups_and_dead_letters(t: TestStore) {
    let store = t.open().await;
    let server = Server::start(store.clone(), None, 1 << 20).await;
    add(&store, "acct-1", 1).await;
    add_poison(&store, "acct-1").await;
    let options = GroupOptions {
        max_attempts: 1,
        heartbeat_interval: Duration::from_millis(50),
        ..GroupOptions::default()
    };
    let member = GroupMember::projection(&store, "tally", Tally::new("tally"), options)
        .await
        .expect("join");
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.get("/v1/groups").await.1["groups"][0]["lag"] != 0 {
        assert!(Instant::now() < deadline, "the group never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, described) = server.get("/v1/groups/tally").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(described["members"].as_array().map(Vec::len), Some(1));
    let (status, refused) = server.post("/v1/groups/tally/reset", r#"{"to":"earliest"}"#).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::CONFLICT, Some("group_has_members"))
    );
    let (_, letters) = server.get("/v1/dead-letters?group=tally").await;
    let id = letters["dead_letters"][0]["id"].as_i64().expect("a dead letter");
    let (status, retried) = server.post(&format!("/v1/dead-letters/{id}/retry"), "").await;
    assert_eq!((status, retried["status"].as_str()), (StatusCode::OK, Some("retry")));
    member.shutdown().await.expect("leave");

    let (status, reset) = server
        .post("/v1/groups/tally/reset", r#"{"to":{"offsets":{"3":0}}}"#)
        .await;
    assert_eq!(status, StatusCode::OK, "{reset}");
    let (status, reset) = server.post("/v1/groups/tally/reset", r#"{"to":"earliest"}"#).await;
    assert_eq!((status, reset["lag"].as_u64()), (StatusCode::OK, Some(2)));
    let (status, _) = server
        .post(
            "/v1/groups/tally/reset",
            r#"{"to":{"timestamp":"2020-01-01T00:00:00Z"}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

async fn bearer_tokens(t: TestStore) {
    let server = Server::start(t.open().await, Some("s3cret"), 1 << 20).await;
    let anonymous = Client::new();
    for path in ["/v1/partitions", "/v1/streams/order-1/events", "/v1/groups", "/metrics"] {
        let response = anonymous.get(server.url(path)).send().await.expect("GET");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "unauthorized");
    }
    let wrong = anonymous
        .get(server.url("/v1/partitions"))
        .bearer_auth("s3cre7")
        .send()
        .await
        .expect("GET");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let refused = anonymous
        .post(server.url("/v1/streams/order-1/events"))
        .body(r#"{"expected_version":"any","events":[{"type":"A","data":1}]}"#)
        .send()
        .await
        .expect("POST");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        server.store.record_count().await.expect("hw"),
        0,
        "an unauthorised append landed"
    );
    let health = anonymous.get(server.url("/health")).send().await.expect("GET");
    assert_eq!(health.status(), StatusCode::OK);
    let (status, _) = server.get("/v1/partitions").await;
    assert_eq!(status, StatusCode::OK, "the right token opens the API");
    server.stop().await;
}

async fn metrics_and_health(t: TestStore) {
    let server = Server::start(t.open().await, None, 1 << 20).await;
    server
        .post(
            "/v1/streams/order-1/events",
            r#"{"expected_version":"any","events":[{"type":"A","data":1}]}"#,
        )
        .await;
    server.post("/v1/streams/order-1/events", "{oops").await;
    let (status, health) = server.get("/health").await;
    assert_eq!(
        (status, health),
        (StatusCode::OK, json!({"status": "ok", "role": "leader"}))
    );
    let text = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    for expected in [
        "annals_appends_total",
        "annals_http_requests_total",
        "annals_http_errors_total{code=\"bad_request\"}",
        "annals_partition_high_watermark{partition=\"6\"}",
        "annals_http_request_seconds",
    ] {
        assert!(text.contains(expected), "/metrics lacks {expected}:\n{text}");
    }
    server.stop().await;
}

/// Arbitrary bodies and paths never get a 5xx and never write.
mod robustness {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..Default::default() })]

        #[test]
        fn arbitrary_requests_get_4xx_and_change_nothing(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            json_body in "\\{\"(expected_version|events|command_id|to)\":[ -~]{0,60}\\}",
            path in "[a-z0-9%./_-]{0,40}",
            method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE"]),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let store = Store::open("memory:").await.expect("store");
                let server = Server::start(store, None, 1 << 16).await;
                for (url, payload) in [
                    (server.url("/v1/streams/order-1/events"), body.clone()),
                    (server.url("/v1/streams/order-1/events"), json_body.clone().into_bytes()),
                    (server.url("/v1/groups/g/reset"), json_body.clone().into_bytes()),
                    (server.url(&format!("/v1/{path}")), body.clone()),
                    (server.url(&format!("/v1/streams/{path}/events")), json_body.clone().into_bytes()),
                    (server.url(&format!("/v1/partitions/{path}/events")), Vec::new()),
                ] {
                    let response = server
                        .http
                        .request(method.parse().expect("method"), url.clone())
                        .body(payload)
                        .send()
                        .await
                        .expect("request");
                    let status = response.status();
                    assert!(!status.is_server_error(), "{method} {url}: {status}");
                    if !status.is_success() {
                        let body: Value = response.json().await.expect("errors are JSON");
                        assert!(body["error"].is_string());
                    }
                }
                let written: u64 = server.store.record_count().await.expect("hw");
                // Only a well-formed append may write; the generated bodies never are.
                assert_eq!(written, 0, "a malformed request wrote");
                server.stop().await;
            });
        }
    }
}

/// Appends in flight when the server is told to stop all complete and are acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_appends() {
    let t = TestStore::sqlite().await.expect("sqlite");
    let server = Server::start(t.open().await, None, 1 << 20).await;
    let mut appends = Vec::new();
    for i in 0..64 {
        let (http, url) = (
            server.http.clone(),
            server.url(&format!("/v1/streams/order-{i}/events")),
        );
        appends.push(tokio::spawn(async move {
            http.post(url)
                .body(r#"{"expected_version":"any","events":[{"type":"A","data":1}]}"#)
                .send()
                .await
                .map(|response| response.status())
        }));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let store = server.store.clone();
    // Bounded, so that a shutdown that hangs fails here rather than holding up the run:
    // the server gives requests in flight 30 s.
    tokio::time::timeout(Duration::from_secs(90), server.stop())
        .await
        .expect("the server stopped within 90 s");
    let mut acknowledged = 0;
    for append in appends {
        let answer = tokio::time::timeout(Duration::from_secs(90), append).await;
        match answer
            .expect("every request answered or refused within 90 s")
            .expect("task")
        {
            Ok(status) if status == StatusCode::CREATED => acknowledged += 1,
            Ok(status) => panic!("an append got {status}"),
            // Sent after the listener closed: refused at connect, never half-done.
            Err(error) => assert!(error.is_connect() || error.is_request(), "{error}"),
        }
    }
    let written: u64 = store.record_count().await.expect("hw");
    assert_eq!(written, acknowledged, "acknowledged appends == records");
}

/// A long poll waiting at the head of the log does not hold a shutdown: it answers at
/// once, as one that timed out would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_long_polls_at_once() {
    let t = TestStore::sqlite().await.expect("sqlite");
    let server = Server::start(t.open().await, None, 1 << 20).await;
    let poll = server
        .http
        .get(server.url("/v1/partitions/3/events?from_offset=0&wait_ms=30000"))
        .send();
    let poll = tokio::spawn(poll);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the poll waits while the server runs");
    let asked = Instant::now();
    server.stop().await;
    let response = poll.await.expect("task").expect("an answer");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "shutdown waited {:?} for the poll",
        asked.elapsed()
    );
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.expect("a JSON page");
    assert_eq!(page["events"], json!([]));
    assert_eq!(page["next_offset"], 0);
}

/// 64 clients append and read for a while; not one error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_without_an_error() {
    let seconds: u64 = std::env::var("ANNALS_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let t = TestStore::sqlite().await.expect("sqlite");
    let server = Server::start(t.open().await, None, 1 << 20).await;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut clients = Vec::new();
    for client in 0..64 {
        let (http, base) = (server.http.clone(), server.base.clone());
        clients.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let stream = format!("load-{client}-{}", done % 10);
                let status = http
                    .post(format!("{base}/v1/streams/{stream}/events"))
                    .body(r#"{"expected_version":"any","events":[{"type":"A","data":{"n":1}}]}"#)
                    .send()
                    .await
                    .expect("append")
                    .status();
                assert_eq!(status, StatusCode::CREATED);
                let status = http
                    .get(format!("{base}/v1/streams/{stream}/events?limit=5"))
                    .send()
                    .await
                    .expect("read")
                    .status();
                assert_eq!(status, StatusCode::OK);
                done += 1;
            }
            done
        }));
    }
    let mut appends = 0;
    for client in clients {
        appends += client.await.expect("a client failed");
    }
    let written: u64 = server.store.record_count().await.expect("hw");
    assert_eq!(written, appends);
    server.stop().await;
}
