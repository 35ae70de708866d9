//! The shop's aggregates: products with stock, orders with their life cycle, and
//! payments through a simulated gateway. Pure decisions; the saga and the views put
//! them to work.

use std::collections::BTreeMap;

use annals::aggregate::{Aggregate, DomainEvent};
use annals::snapshot::Snapshottable;
use serde::{Deserialize, Serialize};

/// Money in cents.
pub type Cents = u64;

// ---------------------------------------------------------------- Product

/// A product: its price and its stock, with what each order has reserved.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Whether it was created.
    pub exists: bool,
    /// Its name.
    pub name: String,
    /// Its price.
    pub price: Cents,
    /// Units not reserved.
    pub available: u64,
    /// Units reserved, per order.
    pub reserved: BTreeMap<String, u64>,
}

/// What a product can be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductCommand {
    /// Lists a new product.
    Create {
        /// Its name.
        name: String,
        /// Its price.
        price: Cents,
        /// Units in stock.
        stock: u64,
    },
    /// Holds units for an order (once per order).
    Reserve {
        /// The order.
        order: String,
        /// Units.
        quantity: u64,
    },
    /// Gives an order's units back (if it holds any).
    Release {
        /// The order.
        order: String,
    },
    /// Adds units.
    Restock {
        /// Units.
        quantity: u64,
    },
    /// Sends an order's units out: they leave the stock for good.
    Ship {
        /// The order.
        order: String,
    },
}

/// What happened to a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
#[serde(tag = "type", content = "data")]
pub enum ProductEvent {
    /// Listed.
    ProductCreated {
        /// Its name.
        name: String,
        /// Its price.
        price: Cents,
        /// Units in stock.
        stock: u64,
    },
    /// Units held for an order.
    StockReserved {
        /// The order.
        order: String,
        /// Units.
        quantity: u64,
    },
    /// An order's units given back.
    StockReleased {
        /// The order.
        order: String,
        /// Units.
        quantity: u64,
    },
    /// Units added.
    Restocked {
        /// Units.
        quantity: u64,
    },
    /// An order's units sent out.
    StockShipped {
        /// The order.
        order: String,
        /// Units.
        quantity: u64,
    },
}

/// Why a product refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    /// It was listed already.
    #[error("the product exists already")]
    AlreadyExists,
    /// It was never listed.
    #[error("no such product")]
    Unknown,
    /// Not enough units are available.
    #[error("only {available} available, {requested} requested")]
    OutOfStock {
        /// Units available.
        available: u64,
        /// Units asked for.
        requested: u64,
    },
    /// A quantity of zero, or a price of zero.
    #[error("quantities and prices must be positive")]
    NotPositive,
}

impl Aggregate for Product {
    const CATEGORY: &'static str = "product";
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = ProductError;

    fn handle(&self, command: ProductCommand) -> Result<Vec<ProductEvent>, ProductError> {
        match command {
            ProductCommand::Create { name, price, stock } => {
                if self.exists {
                    return Err(ProductError::AlreadyExists);
                }
                if price == 0 {
                    return Err(ProductError::NotPositive);
                }
                Ok(vec![ProductEvent::ProductCreated { name, price, stock }])
            }
            _ if !self.exists => Err(ProductError::Unknown),
            ProductCommand::Reserve { order, quantity } => {
                if quantity == 0 {
                    return Err(ProductError::NotPositive);
                }
                if self.reserved.contains_key(&order) {
                    return Ok(vec![]); // reserved already: nothing to do
                }
                if quantity > self.available {
                    return Err(ProductError::OutOfStock {
                        available: self.available,
                        requested: quantity,
                    });
                }
                Ok(vec![ProductEvent::StockReserved { order, quantity }])
            }
            ProductCommand::Release { order } => Ok(self
                .reserved
                .get(&order)
                .map(|&quantity| ProductEvent::StockReleased { order, quantity })
                .into_iter()
                .collect()),
            ProductCommand::Ship { order } => Ok(self
                .reserved
                .get(&order)
                .map(|&quantity| ProductEvent::StockShipped { order, quantity })
                .into_iter()
                .collect()),
            ProductCommand::Restock { quantity } => {
                if quantity == 0 {
                    return Err(ProductError::NotPositive);
                }
                Ok(vec![ProductEvent::Restocked { quantity }])
            }
        }
    }

    fn apply(&mut self, event: &ProductEvent) {
        match event {
            ProductEvent::ProductCreated { name, price, stock } => {
                self.exists = true;
                self.name.clone_from(name);
                self.price = *price;
                self.available = *stock;
            }
            ProductEvent::StockReserved { order, quantity } => {
                self.available -= quantity;
                self.reserved.insert(order.clone(), *quantity);
            }
            ProductEvent::StockReleased { order, quantity } => {
                self.available += quantity;
                self.reserved.remove(order);
            }
            ProductEvent::Restocked { quantity } => self.available += quantity,
            ProductEvent::StockShipped { order, .. } => {
                self.reserved.remove(order);
            }
        }
    }
}

impl Snapshottable for Product {}

// ---------------------------------------------------------------- Order

/// Where an order is in its life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Not created yet.
    #[default]
    New,
    /// Being filled.
    Draft,
    /// Placed: stock and payment are being arranged.
    Placed,
    /// Paid.
    Paid,
    /// Shipped: done.
    Shipped,
    /// Cancelled: done.
    Cancelled,
}

impl OrderStatus {
    /// Its name, as the views store it.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::New => "new",
            OrderStatus::Draft => "draft",
            OrderStatus::Placed => "placed",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The product.
    pub sku: String,
    /// Units.
    pub quantity: u64,
    /// The price per unit when it was added.
    pub unit_price: Cents,
}

/// An order.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Its status.
    pub status: OrderStatus,
    /// Who ordered.
    pub customer: String,
    /// Its lines.
    pub lines: Vec<Line>,
}

impl Order {
    /// The sum of its lines.
    pub fn total(&self) -> Cents {
        self.lines.iter().map(|l| l.quantity * l.unit_price).sum()
    }
}

/// What an order can be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    /// Opens a draft for a customer.
    Create {
        /// The customer.
        customer: String,
    },
    /// Adds a line to the draft.
    AddLine(Line),
    /// Places the draft: the saga reserves stock, and takes payment with the payment
    /// method when one is given (otherwise it waits for `pay`).
    Place {
        /// A payment method token, e.g. `card-4242`.
        payment_method: Option<String>,
    },
    /// Records the payment.
    MarkPaid {
        /// The payment.
        payment: String,
    },
    /// Ships a paid order.
    Ship,
    /// Cancels an order not shipped yet.
    Cancel {
        /// Why.
        reason: String,
    },
}

/// What happened to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
#[serde(tag = "type", content = "data")]
pub enum OrderEvent {
    /// Opened.
    OrderCreated {
        /// The customer.
        customer: String,
    },
    /// A line added.
    LineAdded(Line),
    /// Placed, with its lines and total as placed.
    OrderPlaced {
        /// The customer.
        customer: String,
        /// The lines.
        lines: Vec<Line>,
        /// The total.
        total: Cents,
        /// How to pay, if given at once.
        payment_method: Option<String>,
    },
    /// Paid.
    OrderPaid {
        /// The payment.
        payment: String,
        /// The amount.
        total: Cents,
    },
    /// Shipped.
    OrderShipped,
    /// Cancelled.
    OrderCancelled {
        /// Why.
        reason: String,
    },
}

/// Why an order refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// It exists already.
    #[error("the order exists already")]
    AlreadyExists,
    /// It does not exist.
    #[error("no such order")]
    Unknown,
    /// The command does not fit the order's status.
    #[error("cannot {action} an order that is {status}")]
    WrongStatus {
        /// What was asked.
        action: &'static str,
        /// The status.
        status: &'static str,
    },
    /// Placing an order without lines.
    #[error("an order needs at least one line")]
    Empty,
    /// A line with no units or no price.
    #[error("a line needs a quantity and a price")]
    BadLine,
}

impl Order {
    /// Refuses unless the order is in `status`: an order that was never created is
    /// unknown, one in another status refuses `action`.
    pub fn require(&self, status: OrderStatus, action: &'static str) -> Result<(), OrderError> {
        match self.status {
            OrderStatus::New => Err(OrderError::Unknown),
            current if current == status => Ok(()),
            current => Err(OrderError::WrongStatus {
                action,
                status: current.as_str(),
            }),
        }
    }
}

impl Aggregate for Order {
    const CATEGORY: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;

    fn handle(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        match command {
            OrderCommand::Create { customer } => match self.status {
                OrderStatus::New => Ok(vec![OrderEvent::OrderCreated { customer }]),
                _ => Err(OrderError::AlreadyExists),
            },
            OrderCommand::AddLine(line) => {
                self.require(OrderStatus::Draft, "add a line to")?;
                if line.quantity == 0 || line.unit_price == 0 {
                    return Err(OrderError::BadLine);
                }
                Ok(vec![OrderEvent::LineAdded(line)])
            }
            OrderCommand::Place { payment_method } => {
                self.require(OrderStatus::Draft, "place")?;
                if self.lines.is_empty() {
                    return Err(OrderError::Empty);
                }
                Ok(vec![OrderEvent::OrderPlaced {
                    customer: self.customer.clone(),
                    lines: self.lines.clone(),
                    total: self.total(),
                    payment_method,
                }])
            }
            OrderCommand::MarkPaid { payment } => {
                self.require(OrderStatus::Placed, "pay")?;
                Ok(vec![OrderEvent::OrderPaid {
                    payment,
                    total: self.total(),
                }])
            }
            OrderCommand::Ship => {
                self.require(OrderStatus::Paid, "ship")?;
                Ok(vec![OrderEvent::OrderShipped])
            }
            OrderCommand::Cancel { reason } => match self.status {
                OrderStatus::New => Err(OrderError::Unknown),
                OrderStatus::Cancelled => Ok(vec![]),
                OrderStatus::Shipped => Err(OrderError::WrongStatus {
                    action: "cancel",
                    status: "shipped",
                }),
                _ => Ok(vec![OrderEvent::OrderCancelled { reason }]),
            },
        }
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::OrderCreated { customer } => {
                self.status = OrderStatus::Draft;
                self.customer.clone_from(customer);
            }
            // Two lines of one product are one line: the saga reserves per product.
            OrderEvent::LineAdded(line) => match self.lines.iter_mut().find(|l| l.sku == line.sku) {
                Some(existing) => existing.quantity += line.quantity,
                None => self.lines.push(line.clone()),
            },
            OrderEvent::OrderPlaced { .. } => self.status = OrderStatus::Placed,
            OrderEvent::OrderPaid { .. } => self.status = OrderStatus::Paid,
            OrderEvent::OrderShipped => self.status = OrderStatus::Shipped,
            OrderEvent::OrderCancelled { .. } => self.status = OrderStatus::Cancelled,
        }
    }
}

// ---------------------------------------------------------------- Payment

/// A payment for one order, through a simulated card gateway.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// Whether it was attempted.
    pub attempted: bool,
    /// Whether the gateway took the money.
    pub captured: bool,
}

/// What a payment can be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentCommand {
    /// Charges a card for an order.
    Charge {
        /// The order.
        order: String,
        /// The amount.
        amount: Cents,
        /// The card number.
        card: String,
    },
}

/// What happened to a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
#[serde(tag = "type", content = "data")]
pub enum PaymentEvent {
    /// The gateway took the money.
    PaymentCaptured {
        /// The order.
        order: String,
        /// The amount.
        amount: Cents,
    },
    /// The gateway refused.
    PaymentDeclined {
        /// The order.
        order: String,
        /// The gateway's reason.
        reason: String,
    },
}

/// Why a payment refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// Charged already.
    #[error("the payment was attempted already")]
    AlreadyAttempted,
}

/// The simulated gateway: payment methods ending in `0000` are declined, as is anything
/// over 5,000.00.
pub fn gateway(card: &str, amount: Cents) -> Result<(), &'static str> {
    if card.ends_with("0000") {
        Err("card declined")
    } else if amount > 500_000 {
        Err("amount over the card's limit")
    } else {
        Ok(())
    }
}

impl Aggregate for Payment {
    const CATEGORY: &'static str = "payment";
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;

    fn handle(
        &self,
        PaymentCommand::Charge { order, amount, card }: PaymentCommand,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        if self.attempted {
            return Err(PaymentError::AlreadyAttempted);
        }
        Ok(vec![match gateway(&card, amount) {
            Ok(()) => PaymentEvent::PaymentCaptured { order, amount },
            Err(reason) => PaymentEvent::PaymentDeclined {
                order,
                reason: reason.to_owned(),
            },
        }])
    }

    fn apply(&mut self, event: &PaymentEvent) {
        self.attempted = true;
        self.captured = matches!(event, PaymentEvent::PaymentCaptured { .. });
    }
}
