//! `shop`: an e-commerce order app on annals.
//!
//! Three aggregates ([`domain`]): products with stock, orders (draft → placed → paid →
//! shipped, or cancelled) and payments through a simulated gateway. An order saga
//! ([`saga`]) runs as a consumer group: it reserves stock for a placed order, takes
//! payment, marks the order paid, and undoes the reservations when stock runs out or
//! the payment is declined. A placed order whose payment has not arrived within
//! [`Shop::with_payment_timeout`] is cancelled by a timer ([`saga::PaymentDue`]), fired
//! by a timer group. Read models ([`views`]) are SQL tables built by a
//! transactional projection. [`http`] serves them with a small web page.

pub mod domain;
pub mod http;
pub mod saga;
pub mod scenario;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use annals::aggregate::{CommandContext, CommandError, Repository};
use annals::group::{admin, GroupMember, GroupOptions};
use annals::readmodel::Db;
use annals::schedule::{Clock, Scheduler, SystemClock, TimerOptions, TimerWorker};
use annals::{Store, StoreOptions};

use domain::{Line, Order, OrderCommand, OrderError, Payment, Product, ProductCommand};
use views::ShopViews;

/// The consumer group running the saga.
pub const SAGA_GROUP: &str = "order-saga";
/// The consumer group building the views.
pub const VIEWS_GROUP: &str = "shop-views";
/// The timer group firing the shop's deadlines.
pub const TIMERS_GROUP: &str = "order-timers";
/// How long a placed order waits for its payment by default.
pub const DEFAULT_PAYMENT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Why a shop operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ShopError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] annals::Error),
    /// The order refused.
    #[error("order: {0}")]
    Order(OrderError),
    /// A product refused (or does not exist).
    #[error("product {sku}: {reason}")]
    Product {
        /// The product.
        sku: String,
        /// Why.
        reason: String,
    },
}

impl<E: std::error::Error + Send + Sync + 'static> From<CommandError<E>> for ShopError {
    fn from(error: CommandError<E>) -> Self {
        ShopError::Store(saga::store_failure(error))
    }
}

/// The shop on a store: its repositories and views.
#[derive(Clone)]
pub struct Shop {
    /// The store.
    pub store: Store,
    /// The store's database, where the views live.
    pub db: Db,
    /// Products.
    pub products: Repository<Product>,
    /// Orders.
    pub orders: Repository<Order>,
    /// Payments.
    pub payments: Repository<Payment>,
    /// The live views.
    pub views: ShopViews,
    /// Schedules and cancels the shop's deadlines.
    pub scheduler: Scheduler,
    /// How long a placed order waits for its payment before it is cancelled.
    pub payment_timeout: Duration,
    /// The clock deadlines fire by.
    pub clock: Arc<dyn Clock>,
}

/// The shop's running consumer groups.
pub struct Workers {
    saga: GroupMember,
    views: GroupMember,
    timers: TimerWorker,
}

impl Workers {
    /// Stops them all, gracefully.
    pub async fn shutdown(self) -> annals::Result<()> {
        self.timers.shutdown().await?;
        self.saga.shutdown().await?;
        self.views.shutdown().await
    }
}

fn options() -> GroupOptions {
    GroupOptions {
        batch_size: 200,
        heartbeat_interval: Duration::from_millis(200),
        retry_backoff: Duration::from_millis(20),
        ..GroupOptions::default()
    }
}

impl Shop {
    /// The shop on the store at `url` (created if missing).
    pub async fn open(url: &str) -> Result<Shop, ShopError> {
        let store = StoreOptions::from_url(url)?.open().await?;
        Shop::on(store)
    }

    /// The shop on an open store.
    pub fn on(store: Store) -> Result<Shop, ShopError> {
        let db = store.read_models()?;
        let products = Repository::new(store.clone()).with_snapshots(
            &store,
            annals::snapshot::SnapshotOptions {
                on_command_every: Some(50),
            },
        );
        Ok(Shop {
            db,
            products,
            orders: Repository::new(store.clone()),
            payments: Repository::new(store.clone()),
            views: ShopViews::new("shop_"),
            scheduler: Scheduler::new(&store),
            payment_timeout: DEFAULT_PAYMENT_TIMEOUT,
            clock: Arc::new(SystemClock),
            store,
        })
    }

    /// The same shop, cancelling orders whose payment has not arrived within `timeout`
    /// of being placed.
    pub fn with_payment_timeout(mut self, timeout: Duration) -> Self {
        self.payment_timeout = timeout;
        self
    }

    /// The same shop, firing its deadlines by `clock` (a test's `ManualClock`).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Starts a member of the saga group, one of the views group and one of the timer
    /// group in this process.
    pub async fn start_workers(&self) -> annals::Result<Workers> {
        let saga = annals::process::start(&self.store, SAGA_GROUP, saga::OrderSaga::new(self), options()).await?;
        let views = GroupMember::projection(&self.store, VIEWS_GROUP, self.views.clone(), options()).await?;
        let timer_options = TimerOptions {
            group: options(),
            clock: self.clock.clone(),
            ..TimerOptions::default()
        };
        let timers = TimerWorker::start(&self.store, TIMERS_GROUP, saga::PaymentDue::new(self), timer_options).await?;
        Ok(Workers { saga, views, timers })
    }

    /// Lists a product (nothing happens if it exists already).
    pub async fn create_product(&self, sku: &str, name: &str, price: u64, stock: u64) -> Result<(), ShopError> {
        let create = ProductCommand::Create {
            name: name.to_owned(),
            price,
            stock,
        };
        match self.products.execute(sku, create, &CommandContext::new()).await {
            Ok(_) | Err(CommandError::Rejected(domain::ProductError::AlreadyExists)) => Ok(()),
            Err(CommandError::Rejected(error)) => Err(ShopError::Product {
                sku: sku.to_owned(),
                reason: error.to_string(),
            }),
            Err(error) => Err(error.into()),
        }
    }

    /// Creates, fills and places an order at the products' current prices. With a
    /// payment method the saga also takes payment; without one it waits for
    /// [`pay`](Shop::pay).
    pub async fn place_order(
        &self,
        order: &str,
        customer: &str,
        lines: &[(String, u64)],
        payment_method: Option<&str>,
    ) -> Result<Option<annals::Position>, ShopError> {
        // Everything is checked before the order exists, so a refusal leaves nothing.
        if lines.is_empty() {
            return Err(ShopError::Order(OrderError::Empty));
        }
        let mut priced = Vec::with_capacity(lines.len());
        for (sku, quantity) in lines {
            let product = self.products.load(sku).await?;
            if !product.state.exists {
                return Err(ShopError::Product {
                    sku: sku.clone(),
                    reason: "no such product".into(),
                });
            }
            if *quantity == 0 {
                return Err(ShopError::Order(OrderError::BadLine));
            }
            priced.push(Line {
                sku: sku.clone(),
                quantity: *quantity,
                unit_price: product.state.price,
            });
        }
        let context = CommandContext::new().with("customer", customer);
        let create = OrderCommand::Create {
            customer: customer.to_owned(),
        };
        self.order(order, create, &context).await?;
        for line in priced {
            self.order(order, OrderCommand::AddLine(line), &CommandContext::new())
                .await?;
        }
        let place = OrderCommand::Place {
            payment_method: payment_method.map(str::to_owned),
        };
        self.order(order, place, &CommandContext::new()).await
    }

    /// Runs `command` on `order`; where its last event went, if it wrote one.
    async fn order(
        &self,
        order: &str,
        command: OrderCommand,
        context: &CommandContext,
    ) -> Result<Option<annals::Position>, ShopError> {
        match self.orders.execute(order, command, context).await {
            Ok(executed) => Ok(executed.position()),
            Err(CommandError::Rejected(error)) => Err(ShopError::Order(error)),
            Err(error) => Err(error.into()),
        }
    }

    /// Waits until the views show what was written at `position` (read-your-writes), at
    /// most `timeout`; whether they do.
    pub async fn views_show(&self, position: annals::Position, timeout: Duration) -> Result<bool, ShopError> {
        Ok(admin::wait_until(&self.store, VIEWS_GROUP, position, timeout)
            .await?
            .reached)
    }

    /// Pays a placed order (the saga marks it paid, or undoes it if declined).
    pub async fn pay(&self, order: &str, payment_method: &str) -> Result<(), ShopError> {
        let loaded = self.orders.load(order).await?;
        loaded
            .state
            .require(domain::OrderStatus::Placed, "pay")
            .map_err(ShopError::Order)?;
        let charge = domain::PaymentCommand::Charge {
            order: order.to_owned(),
            amount: loaded.state.total(),
            card: payment_method.to_owned(),
        };
        match self.payments.execute(order, charge, &CommandContext::new()).await {
            Ok(_) => Ok(()),
            Err(CommandError::Rejected(error)) => Err(ShopError::Order(OrderError::WrongStatus {
                action: "pay",
                status: if error == domain::PaymentError::AlreadyAttempted {
                    "being paid"
                } else {
                    "unpaid"
                },
            })),
            Err(error) => Err(error.into()),
        }
    }

    /// Ships a paid order.
    pub async fn ship(&self, order: &str) -> Result<(), ShopError> {
        self.order(order, OrderCommand::Ship, &CommandContext::new())
            .await
            .map(drop)
    }

    /// Cancels an order not shipped yet; the saga gives its stock back.
    pub async fn cancel(&self, order: &str, reason: &str) -> Result<(), ShopError> {
        let cancel = OrderCommand::Cancel {
            reason: reason.to_owned(),
        };
        self.order(order, cancel, &CommandContext::new()).await.map(drop)
    }

    /// Waits until the saga, the views and the timer group have handled everything in
    /// the log, and nothing new was written meanwhile.
    pub async fn settle(&self, timeout: Duration) -> Result<(), ShopError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = u64::MAX;
        loop {
            let written: u64 = self.store.record_count().await?;
            let saga = admin::describe(&self.store, SAGA_GROUP).await?.lag;
            let views = admin::describe(&self.store, VIEWS_GROUP).await?.lag;
            let timers = admin::describe(&self.store, TIMERS_GROUP).await?.lag;
            if saga == 0 && views == 0 && timers == 0 && written == last {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(annals::Error::handler(format!(
                    "still busy: saga lag {saga}, views lag {views}, timers lag {timers}"
                ))
                .into());
            }
            last = written;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
