//! The shop's read models, one transactional projection writing SQL tables in the
//! store's database: order summaries, each customer's orders, stock levels and sales
//! per product. Every table name starts with a prefix, so a replay can build a second
//! copy beside the live one (and the two can be compared).

use annals::aggregate::{decode_event, Upcasters};
use annals::group::{Filter, Projection};
use annals::readmodel::{Db, Tx};
use annals::{async_trait, params, RecordedEvent, Result};
use serde::{Deserialize, Serialize};

use crate::domain::{Line, OrderEvent, ProductEvent};

/// The views, in tables named `{prefix}orders`, `{prefix}order_lines`,
/// `{prefix}customer_orders`, `{prefix}stock` and `{prefix}sales`.
#[derive(Debug, Clone)]
pub struct ShopViews {
    prefix: String,
}

impl ShopViews {
    /// Views in tables starting with `prefix` (letters and `_` only).
    pub fn new(prefix: &str) -> Self {
        assert!(
            prefix.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "a plain table prefix"
        );
        ShopViews {
            prefix: prefix.to_owned(),
        }
    }

    fn t(&self, table: &str) -> String {
        format!("{}{table}", self.prefix)
    }
}

#[async_trait]
impl Projection for ShopViews {
    fn filter(&self) -> Filter {
        Filter::categories(["order", "product"]).unwrap_or_default()
    }

    async fn setup(&self, tx: &mut Tx) -> Result<()> {
        for ddl in [
            format!(
                "CREATE TABLE IF NOT EXISTS {} (order_id TEXT PRIMARY KEY, customer TEXT NOT NULL, status TEXT NOT NULL, \
                 lines BIGINT NOT NULL, total BIGINT NOT NULL, reason TEXT)",
                self.t("orders")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (order_id TEXT NOT NULL, sku TEXT NOT NULL, quantity BIGINT NOT NULL, \
                 unit_price BIGINT NOT NULL, PRIMARY KEY (order_id, sku))",
                self.t("order_lines")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (customer TEXT NOT NULL, order_id TEXT NOT NULL, status TEXT NOT NULL, \
                 total BIGINT NOT NULL, PRIMARY KEY (customer, order_id))",
                self.t("customer_orders")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (sku TEXT PRIMARY KEY, name TEXT NOT NULL, price BIGINT NOT NULL, \
                 available BIGINT NOT NULL, reserved BIGINT NOT NULL)",
                self.t("stock")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (sku TEXT PRIMARY KEY, units BIGINT NOT NULL, revenue BIGINT NOT NULL)",
                self.t("sales")
            ),
        ] {
            tx.execute(&ddl, &[]).await?;
        }
        Ok(())
    }

    async fn handle(&self, record: &RecordedEvent, tx: &mut Tx) -> Result<()> {
        let none = Upcasters::new();
        match record.stream.category() {
            "order" => self.order(record.stream.id(), decode_event(record, &none)?, tx).await,
            "product" => self.product(record.stream.id(), decode_event(record, &none)?, tx).await,
            _ => Ok(()),
        }
    }
}

impl ShopViews {
    async fn status(&self, tx: &mut Tx, order: &str, status: &str, reason: Option<&str>) -> Result<()> {
        tx.execute(
            &format!(
                "UPDATE {} SET status = $2, reason = $3 WHERE order_id = $1",
                self.t("orders")
            ),
            params![order, status, reason],
        )
        .await?;
        tx.execute(
            &format!(
                "UPDATE {} SET status = $2 WHERE order_id = $1",
                self.t("customer_orders")
            ),
            params![order, status],
        )
        .await
        .map(drop)
    }

    async fn order(&self, order: &str, event: OrderEvent, tx: &mut Tx) -> Result<()> {
        match event {
            OrderEvent::OrderCreated { customer } => {
                tx.execute(
                    &format!(
                        "INSERT INTO {} (order_id, customer, status, lines, total) VALUES ($1, $2, 'draft', 0, 0)",
                        self.t("orders")
                    ),
                    params![order, customer],
                )
                .await?;
            }
            OrderEvent::LineAdded(Line {
                sku,
                quantity,
                unit_price,
            }) => {
                tx.execute(
                    &format!(
                        "INSERT INTO {} (order_id, sku, quantity, unit_price) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (order_id, sku) DO UPDATE SET quantity = {t}.quantity + excluded.quantity",
                        self.t("order_lines"),
                        t = self.t("order_lines")
                    ),
                    params![order, sku, quantity as i64, unit_price as i64],
                )
                .await?;
                // A line of a product already in the order adds to that line, as the
                // order itself does: count the order's lines rather than its additions.
                tx.execute(
                    &format!(
                        "UPDATE {} SET lines = (SELECT count(*) FROM {} WHERE order_id = $1), \
                         total = total + $2 WHERE order_id = $1",
                        self.t("orders"),
                        self.t("order_lines")
                    ),
                    params![order, (quantity * unit_price) as i64],
                )
                .await?;
            }
            OrderEvent::OrderPlaced { customer, total, .. } => {
                self.status(tx, order, "placed", None).await?;
                tx.execute(
                    &format!(
                        "INSERT INTO {} (customer, order_id, status, total) VALUES ($1, $2, 'placed', $3)",
                        self.t("customer_orders")
                    ),
                    params![customer, order, total as i64],
                )
                .await?;
            }
            OrderEvent::OrderPaid { .. } => {
                self.status(tx, order, "paid", None).await?;
                tx.execute(
                    &format!(
                        "INSERT INTO {sales} (sku, units, revenue) \
                         SELECT sku, quantity, quantity * unit_price FROM {lines} WHERE order_id = $1 AND true \
                         ON CONFLICT (sku) DO UPDATE SET units = {sales}.units + excluded.units, \
                         revenue = {sales}.revenue + excluded.revenue",
                        sales = self.t("sales"),
                        lines = self.t("order_lines")
                    ),
                    params![order],
                )
                .await?;
            }
            OrderEvent::OrderShipped => self.status(tx, order, "shipped", None).await?,
            OrderEvent::OrderCancelled { reason } => self.status(tx, order, "cancelled", Some(&reason)).await?,
        }
        Ok(())
    }

    async fn product(&self, sku: &str, event: ProductEvent, tx: &mut Tx) -> Result<()> {
        let stock = self.t("stock");
        let (sql, params) = match event {
            ProductEvent::ProductCreated {
                name,
                price,
                stock: units,
            } => (
                format!("INSERT INTO {stock} (sku, name, price, available, reserved) VALUES ($1, $2, $3, $4, 0)"),
                params![sku, name, price as i64, units as i64].to_vec(),
            ),
            ProductEvent::StockReserved { quantity, .. } => (
                format!("UPDATE {stock} SET available = available - $2, reserved = reserved + $2 WHERE sku = $1"),
                params![sku, quantity as i64].to_vec(),
            ),
            ProductEvent::StockReleased { quantity, .. } => (
                format!("UPDATE {stock} SET available = available + $2, reserved = reserved - $2 WHERE sku = $1"),
                params![sku, quantity as i64].to_vec(),
            ),
            ProductEvent::StockShipped { quantity, .. } => (
                format!("UPDATE {stock} SET reserved = reserved - $2 WHERE sku = $1"),
                params![sku, quantity as i64].to_vec(),
            ),
            ProductEvent::Restocked { quantity } => (
                format!("UPDATE {stock} SET available = available + $2 WHERE sku = $1"),
                params![sku, quantity as i64].to_vec(),
            ),
        };
        tx.execute(&sql, &params).await.map(drop)
    }
}

/// One order as the summaries show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSummary {
    /// The order.
    pub order_id: String,
    /// The customer.
    pub customer: String,
    /// Its status.
    pub status: String,
    /// Lines.
    pub lines: u64,
    /// Total, in cents.
    pub total: u64,
    /// Why it was cancelled.
    pub reason: Option<String>,
}

/// A product's stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    /// The product.
    pub sku: String,
    /// Its name.
    pub name: String,
    /// Its price, in cents.
    pub price: u64,
    /// Units available.
    pub available: u64,
    /// Units reserved by orders.
    pub reserved: u64,
}

/// A product's sales (paid orders).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sales {
    /// The product.
    pub sku: String,
    /// Units sold.
    pub units: u64,
    /// Revenue, in cents.
    pub revenue: u64,
}

/// Queries on the views.
impl ShopViews {
    /// Order summaries, newest id last; of one customer when given.
    pub async fn orders(&self, db: &Db, customer: Option<&str>) -> Result<Vec<OrderSummary>> {
        match customer {
            Some(customer) => {
                let join = format!(
                    "JOIN {} c ON c.order_id = o.order_id WHERE c.customer = $1",
                    self.t("customer_orders")
                );
                self.summaries(db, &join, vec![customer.into()]).await
            }
            None => self.summaries(db, "", vec![]).await,
        }
    }

    /// One order's summary, if the views have it.
    pub async fn summary(&self, db: &Db, order_id: &str) -> Result<Option<OrderSummary>> {
        let found = self.summaries(db, "WHERE o.order_id = $1", vec![order_id.into()]);
        Ok(found.await?.into_iter().next())
    }

    async fn summaries(
        &self,
        db: &Db,
        filter: &str,
        params: Vec<annals::readmodel::Param>,
    ) -> Result<Vec<OrderSummary>> {
        let rows = db
            .query(
                &format!(
                    "SELECT o.order_id, o.customer, o.status, o.lines, o.total, o.reason FROM {} o {filter} \
                     ORDER BY o.order_id",
                    self.t("orders")
                ),
                params,
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(OrderSummary {
                    order_id: row.get(0)?,
                    customer: row.get(1)?,
                    status: row.get(2)?,
                    lines: row.get(3)?,
                    total: row.get(4)?,
                    reason: row.get(5)?,
                })
            })
            .collect()
    }

    /// Stock levels by SKU.
    pub async fn stock(&self, db: &Db) -> Result<Vec<StockLevel>> {
        let sql = format!(
            "SELECT sku, name, price, available, reserved FROM {} ORDER BY sku",
            self.t("stock")
        );
        db.query(&sql, vec![])
            .await?
            .iter()
            .map(|row| {
                Ok(StockLevel {
                    sku: row.get(0)?,
                    name: row.get(1)?,
                    price: row.get(2)?,
                    available: row.get(3)?,
                    reserved: row.get(4)?,
                })
            })
            .collect()
    }

    /// Sales per product, best first.
    pub async fn sales(&self, db: &Db) -> Result<Vec<Sales>> {
        let sql = format!(
            "SELECT sku, units, revenue FROM {} ORDER BY revenue DESC, sku",
            self.t("sales")
        );
        db.query(&sql, vec![])
            .await?
            .iter()
            .map(|row| {
                Ok(Sales {
                    sku: row.get(0)?,
                    units: row.get(1)?,
                    revenue: row.get(2)?,
                })
            })
            .collect()
    }
}
