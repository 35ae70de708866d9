//! The library's metrics reach whatever recorder the application installs, from a
//! store and a group member embedded in the process, with no server in it.

use std::time::Duration;

use annals::group::{Consumer, GroupMember, GroupOptions, Processed};
use annals::{async_trait, snapshot, Error, RecordedEvent, StreamId};
use annals_testkit::tally::{add, add_poison, caught_up};
use annals_testkit::TestStore;
use metrics_exporter_prometheus::PrometheusBuilder;

/// Fails on poison, takes everything else.
struct Picky;

#[async_trait]
impl Consumer for Picky {
    async fn handle(&self, record: &RecordedEvent, _: &Processed) -> annals::Result<()> {
        let payload: serde_json::Value = record.decode()?;
        if payload["poison"] == true {
            return Err(Error::handler("poison"));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_store_and_member_export_their_metrics() {
    let metrics = PrometheusBuilder::new().install_recorder().expect("the only recorder");
    let Some(t) = TestStore::sqlite().await else { return };
    let store = t.open().await;
    let options = GroupOptions {
        retry_backoff: Duration::from_millis(5),
        ..GroupOptions::default()
    };
    let member = GroupMember::consumer(&store, "billing", Picky, options)
        .await
        .expect("joins");
    for n in 0..10 {
        add(&store, &format!("acct-{n}"), n).await;
    }
    add_poison(&store, "acct-3").await;
    caught_up(&store, "billing").await;
    snapshot::save(&store, &StreamId::new("acct-1").expect("id"), 1, 1, "{}")
        .await
        .expect("snapshot");
    member.shutdown().await.expect("leaves");

    let text = metrics.render();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(line_start))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in:\n{text}"))
    };
    assert_eq!(
        value(r#"annals_appends_total{engine="sqlite",outcome="written"}"#),
        11.0
    );
    assert_eq!(value(r#"annals_appended_events_total{engine="sqlite"}"#), 11.0);
    assert_eq!(value(r#"annals_append_seconds_count{engine="sqlite"}"#), 11.0);
    assert!(text.contains("annals_append_batch_appends"), "{text}");
    assert_eq!(value(r#"annals_group_records_total{group="billing"}"#), 11.0);
    assert_eq!(value(r#"annals_group_dead_letters_total{group="billing"}"#), 1.0);
    assert!(
        text.lines()
            .filter(|line| line.starts_with(r#"annals_group_lag{group="billing""#))
            .all(|line| line.ends_with(" 0")),
        "a caught-up group shows lag:\n{text}"
    );
    assert_eq!(value("annals_snapshot_writes_total"), 1.0);
}
