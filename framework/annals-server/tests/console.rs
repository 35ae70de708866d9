//! The web console in headless Chromium, against a real server with real data: the
//! pages are loaded, their scripts run, and the rendered DOM is checked.
//!
//! Needs Debian's `chromium` (the test command installs it). Without it the test is
//! skipped, unless `ANNALS_REQUIRE_CHROMIUM=1`, which makes that a failure.

use std::time::Duration;

use annals::group::{GroupMember, GroupOptions};
use annals::{AppendRequest, ExpectedVersion, NewEvent, StreamId};
use annals_server::{ServerOptions, Spawned};
use annals_testkit::browser::{chromium, render, Page};
use annals_testkit::tally::{add, add_poison, caught_up, Tally};
use annals_testkit::TestStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_streams_groups_lag_and_dead_letters() {
    let Some(browser) = chromium() else { return };
    let t = TestStore::sqlite().await.expect("sqlite");
    let store = t.open().await;
    add(&store, "acct-1", 5).await;
    add(&store, "acct-1", 7).await;
    add_poison(&store, "acct-2").await;
    let options = GroupOptions {
        max_attempts: 1,
        heartbeat_interval: Duration::from_millis(50),
        ..GroupOptions::default()
    };
    let member = GroupMember::projection(&store, "tally", Tally::new("tally"), options)
        .await
        .expect("join");
    caught_up(&store, "tally").await;
    member.shutdown().await.expect("leave");
    add(&store, "acct-3", 1).await; // lag 1 for the stopped group

    let server = Spawned::start(store.clone(), ServerOptions::default())
        .await
        .expect("serve");
    let base = server.url().to_owned();

    let (home, stream, group) = {
        let (b, base) = (browser.to_owned(), base.clone());
        tokio::task::spawn_blocking(move || {
            (
                render(&b, &format!("{base}/")),
                render(&b, &format!("{base}/#stream=acct-1")),
                render(&b, &format!("{base}/#group=tally")),
            )
        })
        .await
        .expect("chromium")
    };
    assert!(
        home.contains(r#"data-loaded="true""#),
        "the page never loaded its data:\n{home}"
    );
    for expected in ["acct-1", "acct-2", "acct-3", "tally", "poison at acct-2@1", "failed"] {
        assert!(home.contains(expected), "the console lacks {expected:?}:\n{home}");
    }
    assert!(
        home.contains(r#"<td class="lagging">1</td>"#),
        "the group's lag of 1 is not shown:\n{home}"
    );
    assert!(stream.contains("acct-1 (version 2)"), "{stream}");
    assert!(
        stream.contains(r#"{"amount":7}"#),
        "the stream's events are not shown:\n{stream}"
    );
    assert!(group.contains("tally (generation"), "{group}");
    assert!(group.contains("<td>running</td>"), "{group}");

    server.stop().await.expect("serve");
}

/// A consumer that does nothing.
struct Ignore;

#[annals::async_trait]
impl annals::group::Consumer for Ignore {
    async fn handle(&self, _: &annals::RecordedEvent, _: &annals::group::Processed) -> annals::Result<()> {
        Ok(())
    }
}

/// On the in-memory store the console shows the log and its consumer groups too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_on_the_in_memory_store() {
    let Some(browser) = chromium() else { return };
    let store = annals::Store::open("memory:").await.expect("memory store");
    add(&store, "acct-9", 4).await;
    let member = GroupMember::consumer(&store, "mailer", Ignore, GroupOptions::default())
        .await
        .expect("join");
    caught_up(&store, "mailer").await;
    let server = Spawned::start(store, ServerOptions::default()).await.expect("serve");
    let base = server.url().to_owned();
    let home = {
        let (b, url) = (browser.to_owned(), format!("{base}/"));
        tokio::task::spawn_blocking(move || render(&b, &url))
            .await
            .expect("chromium")
    };
    assert!(
        home.contains(r#"data-loaded="true""#),
        "the page never loaded its data:\n{home}"
    );
    assert!(home.contains("acct-9"), "the stream is not shown:\n{home}");
    assert!(home.contains("mailer"), "the group is not shown:\n{home}");
    assert!(
        home.contains(r#"<p id="groups-note"></p>"#),
        "the groups said missing:\n{home}"
    );
    member.shutdown().await.expect("leave");
    server.stop().await.expect("serve");
}

/// A record that expired keeps its row in a stream's page, marked redacted, without data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_redacted_records_as_such() {
    let Some(browser) = chromium() else { return };
    let store = annals::Store::open("memory:").await.expect("memory store");
    add(&store, "acct-4", 5).await;
    add(&store, "acct-4", 7).await;
    let expire = annals::Retention {
        truncate_before: Some(annals::Version(2)),
        ..annals::Retention::default()
    };
    let scope = annals::RetentionScope::Stream(annals::StreamId::new("acct-4").expect("id"));
    store.set_retention(&scope, expire).await.expect("rule");
    store
        .scavenge(annals::ScavengeOptions::default(), &mut |_| {})
        .await
        .expect("scavenge");
    let server = Spawned::start(store, ServerOptions::default()).await.expect("serve");
    let page = {
        let (b, url) = (browser.to_owned(), format!("{}/#stream=acct-4", server.url()));
        tokio::task::spawn_blocking(move || render(&b, &url))
            .await
            .expect("chromium")
    };
    assert!(page.contains("acct-4 (version 2)"), "{page}");
    assert!(
        page.contains(r#"<td><em class="redacted">redacted</em></td>"#) && !page.contains(r#"{"amount":5}"#),
        "the expired record is not shown as redacted:\n{page}"
    );
    assert!(
        page.contains(r#"{"amount":7}"#),
        "the kept record is not shown:\n{page}"
    );
    server.stop().await.expect("serve");
}

/// Runs the `tally` projection over `store` until it has handled everything, giving up
/// on a record after one failure (a poisoned record becomes a dead letter); returns the
/// live member, which the caller stops or keeps.
async fn run_tally(store: &annals::Store) -> GroupMember {
    let options = GroupOptions {
        max_attempts: 1,
        heartbeat_interval: Duration::from_millis(50),
        ..GroupOptions::default()
    };
    let member = GroupMember::projection(store, "tally", Tally::new("tally"), options)
        .await
        .expect("join");
    caught_up(store, "tally").await;
    member
}

/// Serves `store` with samples every `every`, and opens the console in a page.
async fn serve_and_open(browser: &str, store: &annals::Store, every: Duration) -> (Spawned, Page) {
    let server_options = ServerOptions {
        sample_every: every,
        ..ServerOptions::default()
    };
    let server = Spawned::start(store.clone(), server_options).await.expect("serve");
    let page = Page::open(browser, &format!("{}/", server.url())).await;
    (server, page)
}

/// Renders `fragments` of the console at `base` in Chromium, in order.
async fn pages(browser: &str, base: &str, fragments: &[String]) -> Vec<String> {
    let (browser, urls) = (
        browser.to_owned(),
        fragments.iter().map(|f| format!("{base}/{f}")).collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || urls.iter().map(|url| render(&browser, url)).collect())
        .await
        .expect("chromium")
}

/// The stream browser on a store with data: streams found by prefix, in pages; a
/// stream and a partition paged from a version, an offset and a time; a partition's
/// records by event type; a record opened whole, its causation id a link to the record
/// it names; an id no record has.
async fn the_console_finds_and_opens_records(t: TestStore) {
    let Some(browser) = chromium() else { return };
    let store = t.open().await;
    for n in 0..60 {
        add(&store, &format!("acct-{n}"), n).await;
    }
    for n in 1..=45 {
        add(&store, "acct-7", 1000 + n).await;
    }
    let cause = store
        .read_stream(&StreamId::new("acct-7").expect("id"), 1, 1)
        .await
        .expect("read")
        .remove(0);
    let caused = NewEvent::json(
        "Noted",
        &serde_json::json!({"note": "looked at", "nested": {"deep": true}}),
    )
    .expect("event")
    .with_metadata(
        annals::Metadata::new()
            .with_causation_id(cause.event_id)
            .with_correlation_id(cause.event_id),
    );
    store
        .append(AppendRequest::new(StreamId::new("acct-7").expect("id"), ExpectedVersion::Any).event(caused))
        .await
        .expect("append");
    let acct7 = store
        .read_stream(&StreamId::new("acct-7").expect("id"), 1, 100)
        .await
        .expect("read");
    let noted = acct7.last().expect("noted").clone();
    let partition = noted.partition;
    let at_v30 = acct7[29]
        .recorded_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);

    let server = Spawned::start(store.clone(), ServerOptions::default())
        .await
        .expect("serve");
    let fragments = [
        "#prefix=acct-1".to_owned(),
        "#prefix=acct".to_owned(),
        "#stream=acct-7&from=21".to_owned(),
        format!("#stream=acct-7&time={at_v30}"),
        format!("#partition={partition}&type=Noted"),
        format!("#partition={partition}&time={at_v30}"),
        format!("#record={}:{}", noted.partition, noted.offset),
        format!("#event={}", cause.event_id),
        format!("#event={}", uuid::Uuid::now_v7()),
    ];
    let rendered = pages(browser, server.url(), &fragments).await;
    let [found, many, stream, stream_at, typed, partition_at, record, cause_page, unknown] = &rendered[..] else {
        unreachable!()
    };
    let streams_table = |page: &str| {
        page.split("<table id=\"streams\">")
            .nth(1)
            .and_then(|t| t.split("</table>").next())
            .unwrap_or("")
            .to_owned()
    };
    let listed = streams_table(found);
    for id in ["acct-1<", "acct-10<", "acct-19<"] {
        assert!(listed.contains(id), "{id} not found by prefix:\n{listed}");
    }
    assert!(!listed.contains("acct-2<") && !listed.contains("acct-7<"), "{listed}");
    assert!(
        many.contains(r#"<a id="streams-next">next</a>"#),
        "60 streams fit no page of 50:\n{many}"
    );
    assert!(
        stream.contains("acct-7 (version 47)") && stream.contains("<a href=\"#record="),
        "{stream}"
    );
    let versions = |page: &str, table: &str| -> Vec<u64> {
        let table = page
            .split(&format!("<table id=\"{table}\">"))
            .nth(1)
            .unwrap_or("")
            .split("</table>")
            .next()
            .unwrap_or("")
            .to_owned();
        table
            .split("<tr><td>")
            .skip(1)
            .filter_map(|row| row.split("</a>").next()?.rsplit('>').next()?.parse().ok())
            .collect()
    };
    assert_eq!(
        versions(stream, "events"),
        (21..=40).collect::<Vec<_>>(),
        "a page from version 21"
    );
    assert!(
        stream.contains(">earlier</a>") && stream.contains(">later</a>"),
        "{stream}"
    );
    assert_eq!(
        versions(stream_at, "events").first(),
        Some(&30),
        "from the time of version 30"
    );
    let typed_rows = typed
        .split("<table id=\"partition-records\">")
        .nth(1)
        .unwrap_or("")
        .to_owned();
    assert!(
        typed_rows.contains("Noted") && !typed_rows.contains("Added"),
        "by type:\n{typed_rows}"
    );
    assert_eq!(
        versions(partition_at, "partition-records").first(),
        Some(&acct7[29].offset.0),
        "from a time"
    );
    assert!(record.contains(r#"<h3 id="record-title">Noted "#), "{record}");
    assert!(
        record.contains("\"nested\": {\n    \"deep\": true"),
        "the payload is not formatted:\n{record}"
    );
    let link = format!(r##"<a href="#event={}">{}</a>"##, cause.event_id, cause.event_id);
    assert!(
        record.contains(&format!(r#"<dd id="causation">{link}</dd>"#)),
        "no causation link:\n{record}"
    );
    assert!(
        record.contains(&format!(r#"<dd id="correlation">{link}</dd>"#)),
        "no correlation link:\n{record}"
    );
    assert!(
        cause_page.contains(&format!(r#"<h3 id="record-title">Added {}</h3>"#, cause.event_id)),
        "{cause_page}"
    );
    assert!(
        unknown.contains(r#"<p id="no-event">No record has the event id"#),
        "{unknown}"
    );
    server.stop().await.expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_finds_and_opens_records_on_sqlite() {
    the_console_finds_and_opens_records(TestStore::sqlite().await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_finds_and_opens_records_on_postgres() {
    let Some(t) = TestStore::postgres().await else { return };
    the_console_finds_and_opens_records(t).await;
}

/// Types `token` into the console's token field, as a user does.
async fn use_token(page: &mut Page, token: &str) {
    let js = format!(
        "(() => {{ const input = document.getElementById('token'); input.value = {token:?}; input.dispatchEvent(new Event('change')); return true; }})()"
    );
    page.eval(&js).await;
    let expected = if token == "r3ad" { "role: read" } else { "role: admin" };
    page.wait_for(
        &format!("document.getElementById('whoami').textContent === {expected:?}"),
        "the token's role",
    )
    .await;
}

/// Clicks the action `button`, then `confirm-yes`, and waits for the result line.
async fn act(page: &mut Page, button: &str) -> (String, String) {
    page.eval("document.getElementById('action-result').textContent = ''")
        .await;
    page.wait_for(&format!("document.querySelector('#{button}')"), button)
        .await;
    page.click(&format!("#{button}")).await;
    page.wait_for("!document.getElementById('confirm').hidden", "the confirmation")
        .await;
    page.click("#confirm-yes").await;
    page.wait_for(
        "document.getElementById('action-result').textContent !== ''",
        "the action's result",
    )
    .await;
    let class = page.eval("document.getElementById('action-result').className").await;
    let text = page.text("#action-result").await.unwrap_or_default();
    (class.as_str().unwrap_or_default().to_owned(), text)
}

/// The console acts for an admin token, each action confirmed first: pause, resume and
/// reset a group (refused, with the API's error, while it has live members), retry and
/// skip a dead letter; each changes what the API then reports. A read token is shown
/// no action, and the API refuses one sent with it.
async fn the_console_acts_for_an_admin_and_only_for_one(t: TestStore) {
    let Some(browser) = chromium() else { return };
    let store = t.open().await;
    add(&store, "acct-1", 5).await;
    add_poison(&store, "acct-2").await;
    add_poison(&store, "acct-5").await;
    add(&store, "acct-3", 7).await;
    let member = run_tally(&store).await;
    let tokens = annals_server::Tokens::none()
        .with("adm1n", annals_server::Role::Admin)
        .and_then(|tokens| tokens.with("r3ad", annals_server::Role::Read))
        .expect("tokens");
    let server = Spawned::start(
        store.clone(),
        ServerOptions {
            tokens,
            ..ServerOptions::default()
        },
    )
    .await
    .expect("serve");
    let describe = || async { annals::group::admin::describe(&store, "tally").await.expect("describe") };

    let mut page = Page::open(browser, &format!("{}/#group=tally", server.url())).await;
    use_token(&mut page, "adm1n").await;
    page.wait_for("document.querySelector('#group-actions')", "the group's actions")
        .await;

    // Cancelled, nothing happens.
    page.click("#group-pause").await;
    page.click("#confirm-no").await;
    assert!(
        describe().await.partitions.iter().all(|p| !p.paused),
        "a cancelled pause paused"
    );

    assert_eq!(
        act(&mut page, "group-pause").await,
        ("done".into(), "paused tally".into())
    );
    assert!(describe().await.partitions.iter().all(|p| p.paused), "not paused");
    assert_eq!(
        act(&mut page, "group-resume").await,
        ("done".into(), "resumed tally".into())
    );
    assert!(describe().await.partitions.iter().all(|p| !p.paused), "not resumed");

    let committed: Vec<_> = describe().await.partitions.iter().map(|p| p.committed).collect();
    let (class, text) = act(&mut page, "group-reset").await;
    assert_eq!(class, "failed");
    assert!(text.starts_with("group_has_members: "), "{text}");
    assert_eq!(
        describe()
            .await
            .partitions
            .iter()
            .map(|p| p.committed)
            .collect::<Vec<_>>(),
        committed
    );
    member.shutdown().await.expect("leave");
    page.wait_for(
        "document.body.innerHTML.includes('0 live members')",
        "the refresh to show the member gone",
    )
    .await;
    assert_eq!(
        act(&mut page, "group-reset").await,
        ("done".into(), "reset tally to earliest".into())
    );
    assert!(
        describe()
            .await
            .partitions
            .iter()
            .all(|p| p.committed == annals::Offset(0)),
        "not reset"
    );
    // To a time after every record: each partition's end.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    page.eval(&format!(
        "document.getElementById('reset-to').value = 'time'; document.getElementById('reset-time').value = {later:?}; true"
    ))
    .await;
    let (class, text) = act(&mut page, "group-reset").await;
    assert_eq!(
        (class.as_str(), text.contains("first records at or after")),
        ("done", true),
        "{text}"
    );
    assert!(
        describe()
            .await
            .partitions
            .iter()
            .all(|p| p.committed == p.high_watermark),
        "not reset to the time"
    );

    let letter = annals::group::admin::dead_letters(&store, Some("tally"))
        .await
        .expect("letters")
        .remove(0);
    let (class, text) = act(&mut page, &format!("retry-{}", letter.id)).await;
    assert_eq!((class.as_str(), text.contains("handed back")), ("done", true), "{text}");
    let retried = annals::group::admin::dead_letters(&store, Some("tally"))
        .await
        .expect("letters");
    assert_eq!(retried[0].status.as_str(), "retry");
    let (class, _) = act(&mut page, &format!("skip-{}", letter.id)).await;
    assert_eq!(class, "done");
    let left = annals::group::admin::dead_letters(&store, Some("tally"))
        .await
        .expect("letters");
    assert!(left.iter().all(|l| l.id != letter.id), "still there: {left:?}");

    // A read token sees no action; the API refuses one sent with it.
    use_token(&mut page, "r3ad").await;
    page.wait_for(
        "document.getElementById('group-detail').dataset.role === 'read'",
        "the group drawn for a read token",
    )
    .await;
    assert_eq!(page.eval("document.querySelectorAll('button.action').length").await, 0);
    let refused = page
        .eval("post('/v1/groups/tally/pause').then(() => 'done', error => error.code)")
        .await;
    assert_eq!(refused, "forbidden");
    assert!(describe().await.partitions.iter().all(|p| !p.paused));
    page.close().await;
    server.stop().await.expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_acts_for_an_admin_and_only_for_one_on_sqlite() {
    the_console_acts_for_an_admin_and_only_for_one(TestStore::sqlite().await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_acts_for_an_admin_and_only_for_one_on_postgres() {
    let Some(t) = TestStore::postgres().await else { return };
    the_console_acts_for_an_admin_and_only_for_one(t).await;
}

/// The charts: the page draws from the samples the server pushes (the charting library
/// served by the server itself), and they move when appends arrive and a group lags.
async fn the_console_charts_throughput_and_lag(t: TestStore) {
    let Some(browser) = chromium() else { return };
    let store = t.open().await;
    add(&store, "acct-1", 5).await;
    run_tally(&store).await.shutdown().await.expect("leave");
    let (server, mut page) = serve_and_open(browser, &store, Duration::from_millis(200)).await;
    assert_eq!(
        page.eval("typeof uPlot").await,
        "function",
        "the charting library did not load"
    );
    page.wait_for(
        "Number(document.getElementById('charts').dataset.samples) >= 3",
        "samples",
    )
    .await;
    page.wait_for(
        "document.querySelectorAll('#chart-appends canvas').length > 0",
        "the appends chart",
    )
    .await;
    let before = page
        .eval("Number(document.getElementById('charts').dataset.appended)")
        .await;
    for n in 0..40 {
        add(&store, &format!("acct-{}", n % 7), n).await;
    }
    page.wait_for(
        &format!("Number(document.getElementById('charts').dataset.appended) >= {before} + 40"),
        "the 40 appends in the chart",
    )
    .await;
    // The stopped group lags by the 40 records it did not handle.
    page.wait_for(
        "document.getElementById('charts').dataset.groups === 'tally'",
        "the group's series",
    )
    .await;
    page.wait_for(
        "document.querySelectorAll('#chart-lag canvas').length > 0",
        "the lag chart",
    )
    .await;
    let legend = page.text("#chart-lag").await.unwrap_or_default();
    assert!(legend.contains("tally"), "{legend}");
    assert_eq!(
        page.eval("document.getElementById('chart-replication').hidden").await,
        true,
        "a leader has no replication lag"
    );
    // Stopping the server ends the pushed stream at once.
    let stopped = tokio::time::timeout(Duration::from_secs(10), server.stop()).await;
    assert!(stopped.is_ok(), "the server waited for the page's stream");
    page.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_charts_throughput_and_lag_on_sqlite() {
    the_console_charts_throughput_and_lag(TestStore::sqlite().await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_charts_throughput_and_lag_on_postgres() {
    let Some(t) = TestStore::postgres().await else { return };
    the_console_charts_throughput_and_lag(t).await;
}

/// Regenerates the screenshots of the console in the book (`scripts/console-screenshots.sh`
/// runs it): the overview with its charts, a record opened whole, and a group's view with
/// its actions, on a store with a little of everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the book's screenshots; run by scripts/console-screenshots.sh"]
async fn screenshots_for_the_book() {
    let browser = chromium().expect("chromium");
    let t = TestStore::sqlite().await.expect("sqlite");
    let store = t.open().await;
    for n in 0..30 {
        add(&store, &format!("acct-{}", n % 9), n).await;
    }
    add_poison(&store, "acct-4").await;
    run_tally(&store).await.shutdown().await.expect("leave");
    let (server, mut page) = serve_and_open(browser, &store, Duration::from_millis(250)).await;
    // A minute of appends in a few seconds, so that the charts have something to show.
    for n in 0..60 {
        add(&store, &format!("acct-{}", n % 5), n).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    page.wait_for(
        "Number(document.getElementById('charts').dataset.samples) >= 12",
        "samples",
    )
    .await;
    let book = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../book/src/server");
    page.screenshot(&book.join("console-overview.png"), 1100, 900).await;
    let record = store
        .read_partition(annals::partition_for(&StreamId::new("acct-4").expect("id"), 16), 0, 1)
        .await
        .expect("read");
    page.goto(&format!(
        "{}/#record={}:{}",
        server.url(),
        record[0].partition,
        record[0].offset
    ))
    .await;
    page.wait_for("document.getElementById('record-title')", "the record")
        .await;
    page.eval("document.getElementById('record').scrollIntoView()").await;
    page.screenshot(&book.join("console-record.png"), 1100, 700).await;
    page.goto(&format!("{}/#group=tally", server.url())).await;
    page.wait_for("document.getElementById('group-actions')", "the group")
        .await;
    page.eval("document.getElementById('group-detail').scrollIntoView()")
        .await;
    page.screenshot(&book.join("console-group.png"), 1100, 600).await;
    page.close().await;
    server.stop().await.expect("serve");
}

/// On a follower the charts add its replication lag behind the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_of_a_follower_charts_its_replication_lag() {
    use annals_server::follower::{FollowOptions, Follower, Leader};

    let Some(browser) = chromium() else { return };
    let (leader_t, follower_t) = (
        TestStore::sqlite().await.expect("sqlite"),
        TestStore::sqlite().await.expect("sqlite"),
    );
    let leader_store = leader_t.open().await;
    add(&leader_store, "acct-1", 5).await;
    let leader = Spawned::start(leader_store.clone(), ServerOptions::default())
        .await
        .expect("leader");
    let replica = follower_t.open().await;
    let follower = Follower::start(replica.clone(), Leader::at(leader.url()), FollowOptions::default());
    let options = ServerOptions {
        follower: Some(follower.handle()),
        sample_every: Duration::from_millis(200),
        ..ServerOptions::default()
    };
    let server = Spawned::start(replica.clone(), options).await.expect("follower");
    let mut page = Page::open(browser, &format!("{}/", server.url())).await;
    page.wait_for(
        "!document.getElementById('chart-replication').hidden",
        "the replication chart",
    )
    .await;
    page.wait_for(
        "document.querySelectorAll('#chart-replication canvas').length > 0",
        "its canvas",
    )
    .await;
    for n in 0..20 {
        add(&leader_store, &format!("acct-{n}"), n).await;
    }
    // The follower's appends chart shows the records it copied.
    page.wait_for(
        "Number(document.getElementById('charts').dataset.appended) >= 20",
        "the copied records",
    )
    .await;
    let legend = page.text("#chart-replication").await.unwrap_or_default();
    assert!(legend.contains("replication lag"), "{legend}");
    page.close().await;
    server.stop().await.expect("follower");
    follower.stop().await.expect("stop");
    leader.stop().await.expect("leader");
}
