//! Given/when/then for the shop's aggregates: their rules, without a store.

use annals_testkit::given::AggregateTest;
use shop::domain::*;

fn line(sku: &str, quantity: u64, unit_price: Cents) -> Line {
    Line {
        sku: sku.into(),
        quantity,
        unit_price,
    }
}

fn created(stock: u64) -> ProductEvent {
    ProductEvent::ProductCreated {
        name: "Mug".into(),
        price: 1_299,
        stock,
    }
}

#[test]
fn a_product_reserves_once_per_order_and_never_more_than_it_has() {
    AggregateTest::<Product>::given([created(5)])
        .when(ProductCommand::Reserve {
            order: "o1".into(),
            quantity: 3,
        })
        .then_events([ProductEvent::StockReserved {
            order: "o1".into(),
            quantity: 3,
        }]);
    AggregateTest::<Product>::given([
        created(5),
        ProductEvent::StockReserved {
            order: "o1".into(),
            quantity: 3,
        },
    ])
    .when(ProductCommand::Reserve {
        order: "o1".into(),
        quantity: 3,
    })
    .then_events([]);
    AggregateTest::<Product>::given([
        created(5),
        ProductEvent::StockReserved {
            order: "o1".into(),
            quantity: 3,
        },
    ])
    .when(ProductCommand::Reserve {
        order: "o2".into(),
        quantity: 3,
    })
    .then_error(|e| {
        *e == ProductError::OutOfStock {
            available: 2,
            requested: 3,
        }
    });
    AggregateTest::<Product>::given_nothing()
        .when(ProductCommand::Restock { quantity: 1 })
        .then_error(|e| *e == ProductError::Unknown);
    AggregateTest::<Product>::given([created(5)])
        .when(ProductCommand::Create {
            name: "Mug".into(),
            price: 1,
            stock: 1,
        })
        .then_error(|e| *e == ProductError::AlreadyExists);
}

#[test]
fn a_product_releases_and_ships_what_an_order_holds() {
    let held = [
        created(5),
        ProductEvent::StockReserved {
            order: "o1".into(),
            quantity: 2,
        },
    ];
    AggregateTest::<Product>::given(held.clone())
        .when(ProductCommand::Release { order: "o1".into() })
        .then_events([ProductEvent::StockReleased {
            order: "o1".into(),
            quantity: 2,
        }]);
    AggregateTest::<Product>::given([created(5)])
        .when(ProductCommand::Release { order: "o1".into() })
        .then_events([]);
    AggregateTest::<Product>::given(held)
        .when(ProductCommand::Ship { order: "o1".into() })
        .then_events([ProductEvent::StockShipped {
            order: "o1".into(),
            quantity: 2,
        }]);
}

fn draft() -> Vec<OrderEvent> {
    vec![
        OrderEvent::OrderCreated { customer: "ann".into() },
        OrderEvent::LineAdded(line("sku-mug", 2, 1_299)),
        OrderEvent::LineAdded(line("sku-tea", 1, 1_450)),
    ]
}

fn placed() -> Vec<OrderEvent> {
    let mut events = draft();
    events.push(OrderEvent::OrderPlaced {
        customer: "ann".into(),
        lines: vec![line("sku-mug", 2, 1_299), line("sku-tea", 1, 1_450)],
        total: 4_048,
        payment_method: Some("card-4242".into()),
    });
    events
}

#[test]
fn an_order_goes_from_draft_to_shipped() {
    insta::assert_json_snapshot!(
        "order_placed",
        AggregateTest::<Order>::given(draft())
            .when(OrderCommand::Place {
                payment_method: Some("card-4242".into()),
            })
            .events()
    );
    let mut paid = placed();
    paid.push(OrderEvent::OrderPaid {
        payment: "payment-1".into(),
        total: 4_048,
    });
    AggregateTest::<Order>::given(placed())
        .when(OrderCommand::MarkPaid {
            payment: "payment-1".into(),
        })
        .then_events([OrderEvent::OrderPaid {
            payment: "payment-1".into(),
            total: 4_048,
        }]);
    AggregateTest::<Order>::given(paid)
        .when(OrderCommand::Ship)
        .then_events([OrderEvent::OrderShipped]);
}

#[test]
fn an_order_refuses_what_its_status_forbids() {
    AggregateTest::<Order>::given(placed())
        .when(OrderCommand::Ship)
        .then_error(|e| {
            matches!(
                e,
                OrderError::WrongStatus {
                    action: "ship",
                    status: "placed"
                }
            )
        });
    let mut cancelled = placed();
    cancelled.push(OrderEvent::OrderCancelled {
        reason: "out of stock".into(),
    });
    AggregateTest::<Order>::given(cancelled.clone())
        .when(OrderCommand::MarkPaid {
            payment: "payment-1".into(),
        })
        .then_error(|e| {
            matches!(
                e,
                OrderError::WrongStatus {
                    action: "pay",
                    status: "cancelled"
                }
            )
        });
    AggregateTest::<Order>::given(cancelled)
        .when(OrderCommand::Cancel { reason: "again".into() })
        .then_events([]);
    AggregateTest::<Order>::given([OrderEvent::OrderCreated { customer: "ann".into() }])
        .when(OrderCommand::Place { payment_method: None })
        .then_error(|e| *e == OrderError::Empty);
    AggregateTest::<Order>::given(placed())
        .when(OrderCommand::AddLine(line("sku-mug", 1, 1)))
        .then_error(|e| matches!(e, OrderError::WrongStatus { .. }));
    AggregateTest::<Order>::given(draft())
        .when(OrderCommand::AddLine(line("sku-mug", 0, 1)))
        .then_error(|e| *e == OrderError::BadLine);
    AggregateTest::<Order>::given_nothing()
        .when(OrderCommand::Ship)
        .then_error(|e| *e == OrderError::Unknown);
}

#[test]
fn the_gateway_declines_some_cards_and_a_payment_is_taken_once() {
    AggregateTest::<Payment>::given_nothing()
        .when(PaymentCommand::Charge {
            order: "o1".into(),
            amount: 100,
            card: "card-4242".into(),
        })
        .then_events([PaymentEvent::PaymentCaptured {
            order: "o1".into(),
            amount: 100,
        }]);
    AggregateTest::<Payment>::given_nothing()
        .when(PaymentCommand::Charge {
            order: "o1".into(),
            amount: 100,
            card: "card-4000-0000".into(),
        })
        .then_events([PaymentEvent::PaymentDeclined {
            order: "o1".into(),
            reason: "card declined".into(),
        }]);
    AggregateTest::<Payment>::given([PaymentEvent::PaymentCaptured {
        order: "o1".into(),
        amount: 100,
    }])
    .when(PaymentCommand::Charge {
        order: "o1".into(),
        amount: 100,
        card: "card-4242".into(),
    })
    .then_error(|e| *e == PaymentError::AlreadyAttempted);
}
