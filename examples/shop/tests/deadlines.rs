//! Payment deadlines as users run them: `shop serve` processes killed with SIGKILL
//! while their timer group fires deadlines, and restarted, on SQLite and PostgreSQL.
//! Every unpaid order is cancelled once, by its own deadline, each deadline fires once,
//! and the stock comes back exactly.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use annals::schedule::timer_stream;
use annals::{Store, StreamId, Version};
use annals_testkit::{wait_for, TestStore};
use serde_json::json;
use shop::domain::OrderStatus;
use shop::saga::payment_deadline;
use shop::Shop;

/// A running `shop serve`.
struct Served {
    child: Child,
    base: String,
}

impl Served {
    fn start(url: &str) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shop"))
            .args([
                "serve",
                "--db",
                url,
                "--listen",
                "127.0.0.1:0",
                "--payment-timeout",
                "0.3",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn shop serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the address");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("shop serve said {line:?}"))
            .to_owned();
        Served { child, base }
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn place(http: &reqwest::Client, base: &str, customer: &str) -> String {
    let placed: serde_json::Value = http
        .post(format!("{base}/orders"))
        .json(&json!({"customer": customer, "lines": [{"sku": "sku-mug", "quantity": 1}]}))
        .send()
        .await
        .expect("POST /orders")
        .json()
        .await
        .expect("JSON");
    placed["order_id"].as_str().expect("order id").to_owned()
}

async fn deadlines_survive_kill_9(t: TestStore) {
    let url = t.url().expect("a store a process can open").to_owned();
    let http = reqwest::Client::new();
    let mut orders = Vec::new();
    // Each round places unpaid orders whose deadlines fall due while they are placed,
    // and kills the process at a different point of the firing.
    for (round, after) in [(0, 0), (1, 150), (2, 400)] {
        let served = Served::start(&url);
        for i in 0..40 {
            orders.push(place(&http, &served.base, &format!("c{round}-{i}")).await);
        }
        tokio::time::sleep(Duration::from_millis(after)).await;
        served.kill();
    }

    let served = Served::start(&url);
    let shop = Shop::on(Store::open(&url).await.expect("open")).expect("shop");
    for order in &orders {
        wait_for(&format!("order {order} cancelled"), async || {
            shop.orders.load(order).await.expect("load").state.status == OrderStatus::Cancelled
        })
        .await;
    }
    wait_for("the stock back", async || {
        shop.products.load("sku-mug").await.expect("load").state.available == 900
    })
    .await;
    served.kill();

    let store = &shop.store;
    for order in &orders {
        let deadline = payment_deadline(order);
        let timer = store
            .read_stream(&timer_stream(deadline), Version(1), 10)
            .await
            .expect("read");
        let types: Vec<&str> = timer.iter().map(|r| r.event_type.as_str()).collect();
        assert_eq!(types, ["TimerScheduled", "TimerFired"], "order {order}'s deadline");
        let events = store
            .read_stream(&StreamId::new(format!("order-{order}")).expect("id"), Version(1), 100)
            .await
            .expect("read");
        let cancels: Vec<_> = events.iter().filter(|r| r.event_type == "OrderCancelled").collect();
        assert_eq!(cancels.len(), 1, "order {order}");
        assert_eq!(
            cancels[0].metadata.command_id,
            Some(deadline),
            "order {order} was cancelled by its deadline"
        );
    }
    let mug = shop.products.load("sku-mug").await.expect("load").state;
    assert_eq!(
        (mug.available, mug.reserved.len()),
        (900, 0),
        "releases applied once each"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_deadlines_survive_kill_9() {
    deadlines_survive_kill_9(TestStore::sqlite().await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_deadlines_survive_kill_9() {
    if let Some(t) = TestStore::postgres().await {
        deadlines_survive_kill_9(t).await;
    }
}
