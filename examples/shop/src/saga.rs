//! The order saga: a process manager (`annals::process`) that turns a placed order into
//! reserved stock, a payment and a paid order, and undoes the reservations when stock
//! runs out or the payment is declined.
//!
//! It keeps each order's workflow as a stream of its own, `order.workflow-ORDER`
//! ([`Workflow`]): the lines it reserved, whether it undid them, whether the order was
//! paid and closed. It reacts to the order's events and to its payment's, which live in
//! another partition and may reach it first; what it remembers tells it what is left to
//! do, so a redelivered or late event does nothing twice.
//!
//! A cancelled order's stock is released here too, whoever cancelled it: the saga
//! handles an order's events in order, so a release never precedes its reservation.
//!
//! A placed order gets a deadline: unless it is paid within the shop's payment timeout,
//! a timer ([`PaymentDue`]) cancels it, and the saga then gives its stock back. A paid
//! or cancelled order's deadline is cancelled.
//!
//! Every command it sends carries a command id derived from the event that caused it
//! (`CommandContext::caused_by`), so a redelivered event sends the same commands again
//! and the store applies each only once: stock is never reserved twice.

use annals::aggregate::{decode_event, CommandContext, CommandError, DomainEvent, Repository, Upcasters};
use annals::group::Filter;
use annals::process::{ProcessManager, ProcessState, Step};
use annals::schedule::{Scheduler, Timer, TimerHandler};
use annals::{async_trait, Error, RecordedEvent, Result};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{
    Cents, Line, Order, OrderCommand, OrderError, OrderEvent, OrderStatus, Payment, PaymentCommand, PaymentError,
    PaymentEvent, Product, ProductCommand, ProductError,
};
use crate::Shop;

/// What the saga records of one order's workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
#[serde(tag = "type", content = "data")]
pub enum WorkflowEvent {
    /// The order's lines were reserved, one by one: all of them, or up to one that ran
    /// out, and then `Undone` follows in the same reaction.
    StockReserved {
        /// The order's lines.
        lines: Vec<Line>,
    },
    /// Stock ran out or the payment was declined: what was reserved went back and the
    /// order was cancelled.
    Undone {
        /// Why.
        reason: String,
    },
    /// The payment was captured and the order marked paid.
    Paid,
    /// The order shipped, or was cancelled, and its stock left or went back.
    Closed,
}

/// One order's workflow, as the saga remembers it.
#[derive(Debug, Default)]
pub struct Workflow {
    /// The lines it reserved stock for (releasing a line it did not reach does nothing).
    pub reserved: Vec<Line>,
    /// Whether it undid the order.
    pub undone: bool,
    /// Whether the order was paid.
    pub paid: bool,
    /// Whether the order shipped or was cancelled.
    pub closed: bool,
}

impl ProcessState for Workflow {
    const CATEGORY: &'static str = "order.workflow";
    type Event = WorkflowEvent;

    fn apply(&mut self, event: &WorkflowEvent) {
        match event {
            WorkflowEvent::StockReserved { lines } => self.reserved = lines.clone(),
            WorkflowEvent::Undone { .. } => self.undone = true,
            WorkflowEvent::Paid => self.paid = true,
            WorkflowEvent::Closed => self.closed = true,
        }
    }
}

/// The saga's handler.
pub struct OrderSaga {
    products: Repository<Product>,
    orders: Repository<Order>,
    payments: Repository<Payment>,
    scheduler: Scheduler,
    payment_timeout: std::time::Duration,
}

impl OrderSaga {
    /// A saga sending its commands through the shop's repositories.
    pub fn new(shop: &Shop) -> Self {
        OrderSaga {
            products: shop.products.clone(),
            orders: shop.orders.clone(),
            payments: shop.payments.clone(),
            scheduler: shop.scheduler.clone(),
            payment_timeout: shop.payment_timeout,
        }
    }
}

/// The target of an order's payment deadline.
pub const PAYMENT_DUE: &str = "order.payment-due";

/// The command id of `order`'s payment deadline: one per order, found again from the
/// order id alone to cancel it.
pub fn payment_deadline(order: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, format!("shop:payment-due:{order}").as_bytes())
}

/// Fires an order's payment deadline: the order is cancelled unless it was paid,
/// shipped or cancelled first (then the order refuses, and that is the answer).
pub struct PaymentDue {
    orders: Repository<Order>,
}

impl PaymentDue {
    /// The handler, cancelling through the shop's orders.
    pub fn new(shop: &Shop) -> Self {
        PaymentDue {
            orders: shop.orders.clone(),
        }
    }
}

#[async_trait]
impl TimerHandler for PaymentDue {
    async fn fire(&self, timer: &Timer) -> Result<()> {
        if timer.target != PAYMENT_DUE {
            return Ok(());
        }
        let order: String = timer.decode::<serde_json::Value>()?["order"]
            .as_str()
            .ok_or_else(|| Error::handler("a payment deadline names no order"))?
            .to_owned();
        let cancel = OrderCommand::Cancel {
            reason: "payment not received in time".to_owned(),
        };
        match self.orders.execute(&order, cancel, &timer.context()).await {
            Ok(_) | Err(CommandError::Rejected(OrderError::WrongStatus { .. } | OrderError::Unknown)) => Ok(()),
            Err(error) => Err(store_failure(error)),
        }
    }
}

/// A command error as the saga sees it: a store failure is retried (the group's
/// retries, then dead letters); a domain refusal is a decision, handled by the caller.
pub(crate) fn store_failure<E: std::error::Error + Send + Sync + 'static>(error: CommandError<E>) -> Error {
    match error {
        CommandError::Store(error) => error,
        other => Error::handler(other),
    }
}

impl OrderSaga {
    /// Reserves the placed order's lines, sets its payment deadline and takes payment
    /// if it came with a method; undoes it all if stock runs out.
    async fn placed(
        &self,
        record: &RecordedEvent,
        lines: &[Line],
        total: Cents,
        payment_method: Option<&str>,
    ) -> Result<Vec<WorkflowEvent>> {
        let order = record.stream.id();
        // Cancelled before the saga got here: nothing to reserve, nothing to charge.
        if self.orders.load(order).await?.state.status != OrderStatus::Placed {
            return Ok(Vec::new());
        }
        self.set_payment_deadline(record, order).await?;
        let reserved = WorkflowEvent::StockReserved { lines: lines.to_vec() };
        for line in lines {
            let context = CommandContext::caused_by(record, &format!("reserve:{}", line.sku));
            let reserve = ProductCommand::Reserve {
                order: order.to_owned(),
                quantity: line.quantity,
            };
            match self.products.execute(&line.sku, reserve, &context).await {
                Ok(_) => {}
                Err(CommandError::Rejected(ProductError::OutOfStock { .. } | ProductError::Unknown)) => {
                    let reason = format!("out of stock: {}", line.sku);
                    self.undo(record, order, lines, &reason).await?;
                    return Ok(vec![reserved, WorkflowEvent::Undone { reason }]);
                }
                Err(error) => return Err(store_failure(error)),
            }
        }
        if let Some(method) = payment_method {
            if self.orders.load(order).await?.state.status == OrderStatus::Placed {
                self.charge(record, order, total, method).await?;
            }
        }
        Ok(vec![reserved])
    }

    /// Schedules `order`'s payment deadline, the payment timeout after it was placed.
    async fn set_payment_deadline(&self, placed: &RecordedEvent, order: &str) -> Result<()> {
        let timeout = chrono::Duration::from_std(self.payment_timeout).unwrap_or(chrono::Duration::MAX);
        let due = placed
            .recorded_at
            .checked_add_signed(timeout)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        let mut context = CommandContext::caused_by(placed, "payment-due");
        context.command_id = payment_deadline(order);
        let payload = serde_json::json!({ "order": order });
        self.scheduler
            .schedule(due, &context, PAYMENT_DUE, &payload)
            .await
            .map(drop)
    }

    /// The lines an order holds stock for: those the workflow reserved, or, when it
    /// has not seen the order placed yet (its payment's partition ran ahead), the
    /// order's own. Releasing or shipping what is not held does nothing.
    async fn lines(&self, workflow: &Workflow, order: &str) -> Result<Vec<Line>> {
        if workflow.reserved.is_empty() {
            Ok(self.orders.load(order).await?.state.lines)
        } else {
            Ok(workflow.reserved.clone())
        }
    }

    /// Releases (`step` "release") or ships (`step` "ship") the units every line of
    /// `order` holds, each with a command id derived from `cause` and the product.
    async fn each_line(&self, cause: &RecordedEvent, order: &str, lines: &[Line], step: &str) -> Result<()> {
        for line in lines {
            let context = CommandContext::caused_by(cause, &format!("{step}:{}", line.sku));
            let order = order.to_owned();
            let command = if step == "ship" {
                ProductCommand::Ship { order }
            } else {
                ProductCommand::Release { order }
            };
            match self.products.execute(&line.sku, command, &context).await {
                Ok(_) | Err(CommandError::Rejected(ProductError::Unknown)) => {}
                Err(error) => return Err(store_failure(error)),
            }
        }
        Ok(())
    }

    /// Takes payment for `order` (payment `payment-ORDER`).
    pub(crate) async fn charge(&self, cause: &RecordedEvent, order: &str, amount: u64, method: &str) -> Result<()> {
        let context = CommandContext::caused_by(cause, "charge");
        let charge = PaymentCommand::Charge {
            order: order.to_owned(),
            amount,
            card: method.to_owned(),
        };
        match self.payments.execute(order, charge, &context).await {
            Ok(_) | Err(CommandError::Rejected(PaymentError::AlreadyAttempted)) => Ok(()),
            Err(error) => Err(store_failure(error)),
        }
    }

    /// Releases every line's stock and cancels the order.
    async fn undo(&self, cause: &RecordedEvent, order: &str, lines: &[Line], reason: &str) -> Result<()> {
        self.each_line(cause, order, lines, "release").await?;
        let cancel = OrderCommand::Cancel {
            reason: reason.to_owned(),
        };
        match self
            .orders
            .execute(order, cancel, &CommandContext::caused_by(cause, "cancel"))
            .await
        {
            // Shipped orders are never cancelled; an unknown one has nothing to undo.
            Ok(_) | Err(CommandError::Rejected(OrderError::WrongStatus { .. } | OrderError::Unknown)) => Ok(()),
            Err(error) => Err(store_failure(error)),
        }
    }

    /// Marks the order paid and cancels its payment deadline.
    async fn captured(&self, record: &RecordedEvent, order: &str) -> Result<Vec<WorkflowEvent>> {
        let mark = OrderCommand::MarkPaid {
            payment: record.stream.to_string(),
        };
        let context = CommandContext::caused_by(record, "mark-paid");
        match self.orders.execute(order, mark, &context).await {
            Ok(_) => {
                self.scheduler.cancel(payment_deadline(order)).await?;
                Ok(vec![WorkflowEvent::Paid])
            }
            Err(CommandError::Rejected(error)) => {
                // Cancelled meanwhile: a real shop would refund here.
                tracing::warn!(order, %error, "payment captured for an order that cannot be paid");
                Ok(Vec::new())
            }
            Err(error) => Err(store_failure(error)),
        }
    }
}

#[async_trait]
impl ProcessManager for OrderSaga {
    type State = Workflow;

    fn filter(&self) -> Filter {
        Filter::categories(["order", "payment"])
            .unwrap_or_default()
            .event_types([
                "OrderPlaced",
                "PaymentCaptured",
                "PaymentDeclined",
                "OrderShipped",
                "OrderCancelled",
            ])
    }

    /// An order's events and its payment's belong to the order's workflow.
    fn key(&self, record: &RecordedEvent) -> Option<String> {
        match record.stream.category() {
            "order" | "payment" => Some(record.stream.id().to_owned()),
            _ => None,
        }
    }

    async fn react(&self, workflow: &Workflow, step: &Step<'_>) -> Result<Vec<WorkflowEvent>> {
        let record = step.record();
        let order = record.stream.id();
        let none = Upcasters::new();
        match record.stream.category() {
            "order" => match decode_event(record, &none)? {
                OrderEvent::OrderPlaced {
                    lines,
                    total,
                    payment_method,
                    ..
                } if workflow.reserved.is_empty() && !workflow.undone => {
                    self.placed(record, &lines, total, payment_method.as_deref()).await
                }
                // The order's stock leaves, or goes back, whoever cancelled it.
                OrderEvent::OrderShipped if !workflow.closed => {
                    let lines = self.lines(workflow, order).await?;
                    self.each_line(record, order, &lines, "ship").await?;
                    Ok(vec![WorkflowEvent::Closed])
                }
                OrderEvent::OrderCancelled { .. } if !workflow.closed => {
                    let lines = self.lines(workflow, order).await?;
                    self.scheduler.cancel(payment_deadline(order)).await?;
                    self.each_line(record, order, &lines, "release").await?;
                    Ok(vec![WorkflowEvent::Closed])
                }
                _ => Ok(Vec::new()),
            },
            "payment" => match decode_event(record, &none)? {
                PaymentEvent::PaymentCaptured { order, .. } if !workflow.paid => self.captured(record, &order).await,
                PaymentEvent::PaymentDeclined { order, reason } if !workflow.undone => {
                    let lines = self.lines(workflow, &order).await?;
                    let reason = format!("payment declined: {reason}");
                    self.undo(record, &order, &lines, &reason).await?;
                    Ok(vec![WorkflowEvent::Undone { reason }])
                }
                _ => Ok(Vec::new()),
            },
            _ => Ok(Vec::new()),
        }
    }
}
