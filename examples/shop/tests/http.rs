//! `shop serve`'s API on real HTTP over loopback, and its web page in headless
//! Chromium (skipped without one, unless `ANNALS_REQUIRE_CHROMIUM=1`).

use std::time::Duration;

use annals_testkit::browser::{chromium, render};
use annals_testkit::TestStore;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shop::{scenario, Shop};

async fn serve(shop: Shop) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, shop::http::router(shop))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    (base, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_through_the_api_and_the_page() {
    let t = TestStore::sqlite().await.expect("sqlite");
    let shop = Shop::on(t.open().await).expect("shop");
    scenario::catalogue(&shop).await.expect("catalogue");
    let workers = shop.start_workers().await.expect("workers");
    let (base, stop) = serve(shop.clone()).await;
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let http = http.clone();
        async move {
            let response = http.post(path).json(&body).send().await.expect("POST");
            let status = response.status();
            (status, response.json::<Value>().await.expect("JSON"))
        }
    };

    let get = |path: String| {
        let http = http.clone();
        async move {
            let response = http.get(path).send().await.expect("GET");
            response.json::<Value>().await.expect("JSON")
        }
    };

    let (status, placed) = post(
        format!("{base}/orders"),
        json!({"customer": "ann", "lines": [{"sku": "sku-mug", "quantity": 2}], "payment_method": "card-4242"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let paid_order = placed["order_id"].as_str().expect("id").to_owned();
    // Read-your-writes: the order is in the views as soon as placing it is answered,
    // with no wait for the group to catch up.
    assert_eq!(placed["visible"], true, "{placed}");
    let listed = get(format!("{base}/customers/ann/orders")).await;
    assert!(
        listed.to_string().contains(&paid_order),
        "the views did not show the order just placed: {listed}"
    );
    let (_, waiting) = post(
        format!("{base}/orders"),
        json!({"customer": "bob", "lines": [{"sku": "sku-tea", "quantity": 1}]}),
    )
    .await;
    let waiting = waiting["order_id"].as_str().expect("id").to_owned();
    shop.settle(Duration::from_secs(60)).await.expect("settle");

    let (status, _) = post(
        format!("{base}/orders/{waiting}/pay"),
        json!({"payment_method": "card-4000-0000"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, shipped) = post(format!("{base}/orders/{paid_order}/ship"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{shipped}");
    shop.settle(Duration::from_secs(60)).await.expect("settle");

    let (status, refused) = post(format!("{base}/orders/{waiting}/ship"), json!({})).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::CONFLICT, Some("refused"))
    );
    let (status, refused) = post(format!("{base}/orders"), json!({"customer": "ann", "lines": []})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    let (status, refused) = post(
        format!("{base}/orders"),
        json!({"customer": "ann", "lines": [{"sku": "nope", "quantity": 1}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    let (status, refused) = post(format!("{base}/orders"), json!({"who": "ann"})).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request"))
    );

    let order = get(format!("{base}/orders/{paid_order}")).await;
    let types: Vec<&str> = order["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        types,
        ["OrderCreated", "LineAdded", "OrderPlaced", "OrderPaid", "OrderShipped"]
    );
    assert_eq!(order["summary"]["status"], "shipped");
    let missing = http.get(format!("{base}/orders/nope")).send().await.expect("GET");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let history = get(format!("{base}/customers/bob/orders")).await;
    assert_eq!(history["orders"][0]["status"], "cancelled");
    let stock = get(format!("{base}/stock")).await;
    assert!(stock["stock"]
        .as_array()
        .is_some_and(|s| s.len() == scenario::CATALOGUE.len()));

    if let Some(browser) = chromium() {
        let (page, detail) = {
            let (browser, base, id) = (browser.to_owned(), base.clone(), paid_order.clone());
            tokio::task::spawn_blocking(move || {
                (
                    render(&browser, &format!("{base}/")),
                    render(&browser, &format!("{base}/#order={id}")),
                )
            })
            .await
            .expect("chromium")
        };
        assert!(page.contains(r#"data-loaded="true""#), "the page never loaded:\n{page}");
        assert!(
            page.contains(&paid_order) && page.contains(&waiting),
            "orders missing:\n{page}"
        );
        assert!(page.contains(r#"<td class="shipped">shipped</td>"#), "{page}");
        assert!(page.contains("cancelled (payment declined: card declined)"), "{page}");
        assert!(page.contains("Stoneware mug"), "stock missing:\n{page}");
        assert!(
            detail.contains(&format!("Order {paid_order} history")) && detail.contains("OrderShipped"),
            "{detail}"
        );
    }
    let _ = stop.send(());
    workers.shutdown().await.expect("stop");
}
