//! The shop at work on real stores: the saga's happy path and both compensations,
//! payment deadlines, redelivery, and views rebuilt by replay, on SQLite and
//! PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use annals::group::{admin, GroupMember, GroupOptions};
use annals::schedule::{ManualClock, Scheduler, TimerStatus};
use annals_testkit::tally::caught_up;
use annals_testkit::TestStore;
use shop::domain::OrderStatus;
use shop::views::ShopViews;
use shop::{scenario, Shop, SAGA_GROUP};

annals_testkit::on_sql_engines!(
    a_paid_order_ships_and_its_stock_leaves,
    missing_stock_cancels_and_releases_what_was_reserved,
    a_declined_payment_cancels_and_releases,
    redelivered_events_never_reserve_twice,
    views_rebuilt_by_replay_equal_the_live_ones,
    cancels_give_stock_back_even_racing_the_saga,
    an_unpaid_order_is_cancelled_when_its_payment_is_due,
);

const SETTLE: Duration = Duration::from_secs(60);

async fn shop(t: &TestStore) -> Shop {
    let shop = Shop::on(t.open().await).expect("shop");
    shop.create_product("sku-mug", "Mug", 1_000, 10).await.expect("product");
    shop.create_product("sku-lamp", "Lamp", 5_000, 1)
        .await
        .expect("product");
    shop
}

async fn status(shop: &Shop, order: &str) -> OrderStatus {
    shop.orders.load(order).await.expect("load").state.status
}

async fn a_paid_order_ships_and_its_stock_leaves(t: TestStore) {
    let shop = shop(&t).await;
    let workers = shop.start_workers().await.expect("workers");
    let lines = [("sku-mug".to_owned(), 3)];
    shop.place_order("o1", "ann", &lines, Some("card-4242"))
        .await
        .expect("place");
    shop.settle(SETTLE).await.expect("settle");
    assert_eq!(status(&shop, "o1").await, OrderStatus::Paid);
    let mug = shop.products.load("sku-mug").await.expect("load").state;
    assert_eq!((mug.available, mug.reserved.get("o1")), (7, Some(&3)));

    shop.ship("o1").await.expect("ship");
    shop.settle(SETTLE).await.expect("settle");
    assert_eq!(status(&shop, "o1").await, OrderStatus::Shipped);
    // What the saga remembers of the order: its own stream.
    let (workflow, version) = annals::process::load::<shop::saga::Workflow>(&shop.store, "o1")
        .await
        .expect("workflow");
    assert_eq!(
        workflow.reserved,
        [shop::domain::Line {
            sku: "sku-mug".into(),
            quantity: 3,
            unit_price: 1_000
        }]
    );
    assert_eq!(
        (workflow.paid, workflow.closed, workflow.undone, version),
        (true, true, false, annals::Version(3))
    );
    let mug = shop.products.load("sku-mug").await.expect("load").state;
    assert_eq!(
        (mug.available, mug.reserved.len()),
        (7, 0),
        "shipped units left the stock"
    );
    let stock = shop.views.stock(&shop.db).await.expect("stock");
    let mug_view = stock.iter().find(|s| s.sku == "sku-mug").expect("mug");
    assert_eq!((mug_view.available, mug_view.reserved), (7, 0));
    let sales = shop.views.sales(&shop.db).await.expect("sales");
    assert_eq!(
        (sales[0].sku.as_str(), sales[0].units, sales[0].revenue),
        ("sku-mug", 3, 3_000)
    );
    let history = shop.views.orders(&shop.db, Some("ann")).await.expect("history");
    assert_eq!((history.len(), history[0].status.as_str()), (1, "shipped"));
    workers.shutdown().await.expect("stop");
}

async fn missing_stock_cancels_and_releases_what_was_reserved(t: TestStore) {
    let shop = shop(&t).await;
    let workers = shop.start_workers().await.expect("workers");
    let lines = [("sku-mug".to_owned(), 4), ("sku-lamp".to_owned(), 2)];
    shop.place_order("o1", "ann", &lines, Some("card-4242"))
        .await
        .expect("place");
    shop.settle(SETTLE).await.expect("settle");
    assert_eq!(status(&shop, "o1").await, OrderStatus::Cancelled);
    let mug = shop.products.load("sku-mug").await.expect("load").state;
    assert_eq!((mug.available, mug.reserved.len()), (10, 0), "the mugs went back");
    assert_eq!(shop.products.load("sku-lamp").await.expect("load").state.available, 1);
    let orders = shop.views.orders(&shop.db, None).await.expect("orders");
    assert_eq!(orders[0].reason.as_deref(), Some("out of stock: sku-lamp"));
    let payment = shop
        .store
        .stream_version(&annals::StreamId::new("payment-o1").expect("id"))
        .await
        .expect("v");
    assert_eq!(payment, 0, "no payment was taken");
    workers.shutdown().await.expect("stop");
}

async fn a_declined_payment_cancels_and_releases(t: TestStore) {
    let shop = shop(&t).await;
    let workers = shop.start_workers().await.expect("workers");
    let lines = [("sku-mug".to_owned(), 2)];
    shop.place_order("o1", "ann", &lines, Some("card-4000-0000"))
        .await
        .expect("place");
    shop.settle(SETTLE).await.expect("settle");
    assert_eq!(status(&shop, "o1").await, OrderStatus::Cancelled);
    assert_eq!(shop.products.load("sku-mug").await.expect("load").state.available, 10);
    let orders = shop.views.orders(&shop.db, None).await.expect("orders");
    assert_eq!(orders[0].reason.as_deref(), Some("payment declined: card declined"));

    // Paying later, by hand: the order waits in `placed` until then.
    shop.place_order("o2", "bob", &lines, None).await.expect("place");
    shop.settle(SETTLE).await.expect("settle");
    assert_eq!(status(&shop, "o2").await, OrderStatus::Placed);
    shop.pay("o2", "card-4242").await.expect("pay");
    shop.settle(SETTLE).await.expect("settle");
    assert_eq!(status(&shop, "o2").await, OrderStatus::Paid);
    assert!(shop.pay("o2", "card-4242").await.is_err(), "paid twice");
    workers.shutdown().await.expect("stop");
}

async fn redelivered_events_never_reserve_twice(t: TestStore) {
    let shop = shop(&t).await;
    let workers = shop.start_workers().await.expect("workers");
    for (order, card) in [("o1", "card-4242"), ("o2", "card-4000-0000"), ("o3", "card-4242")] {
        let lines = [("sku-mug".to_owned(), 2)];
        shop.place_order(order, "ann", &lines, Some(card)).await.expect("place");
    }
    shop.settle(SETTLE).await.expect("settle");
    workers.shutdown().await.expect("stop");
    let written: u64 = shop.store.record_count().await.expect("hw");
    let mug = shop.products.load("sku-mug").await.expect("load");

    // Every event the saga handled is delivered again.
    admin::reset(&shop.store, SAGA_GROUP, admin::ResetTo::Earliest)
        .await
        .expect("reset");
    let workers = shop.start_workers().await.expect("workers");
    shop.settle(SETTLE).await.expect("settle");
    workers.shutdown().await.expect("stop");
    let again = shop.products.load("sku-mug").await.expect("load");
    assert_eq!(again, mug, "a redelivered event changed the stock");
    assert_eq!(again.state.available, 6);
    let rewritten: u64 = shop.store.record_count().await.expect("hw");
    assert_eq!(rewritten, written, "the redelivery wrote events");
}

async fn views_rebuilt_by_replay_equal_the_live_ones(t: TestStore) {
    let shop = shop(&t).await;
    scenario::catalogue(&shop).await.expect("catalogue");
    let workers = shop.start_workers().await.expect("workers");
    scenario::place_orders(&shop, "t", 40, 10, 4, false)
        .await
        .expect("orders");
    shop.settle(SETTLE).await.expect("settle");
    scenario::ship_some(&shop, "t", 3).await.expect("ship");
    shop.settle(SETTLE).await.expect("settle");
    workers.shutdown().await.expect("stop");

    let replay = ShopViews::new("replay_");
    let options = GroupOptions {
        heartbeat_interval: Duration::from_millis(100),
        ..GroupOptions::default()
    };
    let member = GroupMember::projection(&shop.store, "shop-views-replay", replay.clone(), options)
        .await
        .expect("join");
    caught_up(&shop.store, "shop-views-replay").await;
    member.shutdown().await.expect("stop");
    let live = &shop.views;
    let orders = live.orders(&shop.db, None).await.expect("orders");
    assert!(orders.iter().any(|o| o.status == "shipped") && orders.iter().any(|o| o.status == "cancelled"));
    assert_eq!(replay.orders(&shop.db, None).await.expect("orders"), orders);
    assert_eq!(
        replay.stock(&shop.db).await.expect("stock"),
        live.stock(&shop.db).await.expect("stock")
    );
    assert_eq!(
        replay.sales(&shop.db).await.expect("sales"),
        live.sales(&shop.db).await.expect("sales")
    );
    assert_eq!(
        replay.orders(&shop.db, Some("customer-003")).await.expect("history"),
        live.orders(&shop.db, Some("customer-003")).await.expect("history")
    );
}

async fn cancels_give_stock_back_even_racing_the_saga(t: TestStore) {
    let shop = shop(&t).await;
    let workers = shop.start_workers().await.expect("workers");
    // Two lines of one product reserve their sum.
    let lines = [("sku-mug".to_owned(), 2), ("sku-mug".to_owned(), 3)];
    shop.place_order("o1", "ann", &lines, None).await.expect("place");
    shop.settle(SETTLE).await.expect("settle");
    assert_eq!(
        shop.products
            .load("sku-mug")
            .await
            .expect("load")
            .state
            .reserved
            .get("o1"),
        Some(&5)
    );
    let summary = shop.views.orders(&shop.db, Some("ann")).await.expect("orders");
    assert_eq!(
        summary
            .iter()
            .map(|o| (o.order_id.as_str(), o.lines))
            .collect::<Vec<_>>(),
        [("o1", 1)],
        "two additions of one product make one line"
    );
    // Cancelled at once, before or after the saga reserved: the stock comes back.
    for i in 2..12 {
        let order = format!("o{i}");
        shop.place_order(&order, "ann", &[("sku-mug".to_owned(), 1)], None)
            .await
            .expect("place");
        shop.cancel(&order, "changed my mind").await.expect("cancel");
    }
    shop.cancel("o1", "changed my mind").await.expect("cancel");
    shop.settle(SETTLE).await.expect("settle");
    let mug = shop.products.load("sku-mug").await.expect("load").state;
    assert_eq!((mug.available, mug.reserved.len()), (10, 0), "stock leaked: {mug:?}");
    // A refused order leaves nothing behind.
    let refused = shop
        .place_order("o99", "ann", &[("sku-nope".to_owned(), 1)], None)
        .await;
    assert!(refused.is_err());
    assert!(shop.place_order("o98", "ann", &[], None).await.is_err());
    for order in ["order-o99", "order-o98"] {
        let version = shop
            .store
            .stream_version(&annals::StreamId::new(order).expect("id"))
            .await
            .expect("v");
        assert_eq!(version, 0, "{order} was created");
    }
    assert!(matches!(
        shop.pay("o97", "card-4242").await,
        Err(shop::ShopError::Order(shop::domain::OrderError::Unknown))
    ));
    workers.shutdown().await.expect("stop");
}

/// A placed order waits for its payment for the payment timeout, by the shop's clock;
/// then its deadline cancels it and its stock goes back. A paid order's deadline is
/// cancelled, so it never fires.
async fn an_unpaid_order_is_cancelled_when_its_payment_is_due(t: TestStore) {
    let clock = ManualClock::starting_now();
    let shop = shop(&t)
        .await
        .with_payment_timeout(Duration::from_secs(15 * 60))
        .with_clock(Arc::new(clock.clone()));
    let workers = shop.start_workers().await.expect("workers");
    let lines = [("sku-mug".to_owned(), 2)];
    shop.place_order("unpaid", "ann", &lines, None).await.expect("place");
    shop.place_order("paid-late", "bob", &lines, None).await.expect("place");
    shop.settle(SETTLE).await.expect("settle");
    assert_eq!(shop.products.load("sku-mug").await.expect("load").state.available, 6);

    clock.advance(Duration::from_secs(14 * 60));
    shop.pay("paid-late", "card-4242").await.expect("pay");
    shop.settle(SETTLE).await.expect("settle");
    assert_eq!(status(&shop, "unpaid").await, OrderStatus::Placed, "cancelled early");
    let scheduler = Scheduler::new(&shop.store);
    let deadline = |order: &str| scheduler.status(shop::saga::payment_deadline(order));
    assert!(matches!(
        deadline("paid-late").await.expect("status"),
        Some(TimerStatus::Cancelled { .. })
    ));
    assert!(matches!(
        deadline("unpaid").await.expect("status"),
        Some(TimerStatus::Pending { .. })
    ));

    clock.advance(Duration::from_secs(2 * 60));
    annals_testkit::wait_for("the deadline", async || {
        status(&shop, "unpaid").await == OrderStatus::Cancelled
    })
    .await;
    shop.settle(SETTLE).await.expect("settle");
    assert_eq!(status(&shop, "paid-late").await, OrderStatus::Paid);
    assert!(matches!(
        deadline("unpaid").await.expect("status"),
        Some(TimerStatus::Fired { .. })
    ));
    let orders = shop.views.orders(&shop.db, Some("ann")).await.expect("orders");
    assert_eq!(orders[0].reason.as_deref(), Some("payment not received in time"));
    let mug = shop.products.load("sku-mug").await.expect("load").state;
    assert_eq!(
        (mug.available, mug.reserved.len()),
        (8, 1),
        "the unpaid order's mugs went back"
    );
    workers.shutdown().await.expect("stop");
}
