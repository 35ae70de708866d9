//! The web console in headless Chromium, against a real server with real data: the
//! pages are loaded, their scripts run, and the rendered DOM is checked.
//!
//! Needs Debian's `chromium` (the test command installs it). Without it the test is
//! skipped, unless `ANNALS_REQUIRE_CHROMIUM=1`, which makes that a failure.

use std::time::Duration;

use annals::group::{GroupMember, GroupOptions};
use annals_server::{ServerOptions, Spawned};
use annals_testkit::browser::{chromium, render};
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
