//! `shop serve`: the shop's HTTP API and its web page.
//!
//! | route | does |
//! |---|---|
//! | `POST /orders` | `{"customer", "lines": [{"sku", "quantity"}], "payment_method"?}` → 201 `{"order_id"}` |
//! | `POST /orders/{id}/pay` | `{"payment_method"}` |
//! | `POST /orders/{id}/ship`, `POST /orders/{id}/cancel` | `{"reason"}` for cancel |
//! | `GET /orders`, `GET /orders/{id}` | summaries; one order with its event history |
//! | `GET /customers/{c}/orders`, `GET /stock`, `GET /sales` | the other views |
//! | `GET /` | the page: orders, an order's history, stock levels, refreshed as events arrive |

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::{Shop, ShopError};

/// How long placing an order waits for the views to show it.
const VISIBLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// An error as JSON `{"error", "message"}`.
struct Failure(StatusCode, &'static str, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1, "message": self.2}))).into_response()
    }
}

impl From<ShopError> for Failure {
    fn from(error: ShopError) -> Self {
        match error {
            ShopError::Order(crate::domain::OrderError::Unknown) => {
                Failure(StatusCode::NOT_FOUND, "not_found", error.to_string())
            }
            ShopError::Order(_) | ShopError::Product { .. } => {
                Failure(StatusCode::CONFLICT, "refused", error.to_string())
            }
            ShopError::Store(store) => {
                let status = match store.code() {
                    "bad_request" => StatusCode::BAD_REQUEST,
                    "not_found" => StatusCode::NOT_FOUND,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                Failure(status, store.code(), store.to_string())
            }
        }
    }
}

impl From<annals::Error> for Failure {
    fn from(error: annals::Error) -> Self {
        ShopError::Store(error).into()
    }
}

type Answer = Result<Response, Failure>;

fn body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(bytes).map_err(|error| Failure(StatusCode::BAD_REQUEST, "bad_request", error.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    customer: String,
    lines: Vec<NewLine>,
    #[serde(default)]
    payment_method: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLine {
    sku: String,
    quantity: u64,
}

async fn place(State(shop): State<Shop>, bytes: axum::body::Bytes) -> Answer {
    let order: NewOrder = body(&bytes)?;
    let id = format!("w{}", uuid::Uuid::now_v7().simple());
    let lines: Vec<(String, u64)> = order.lines.into_iter().map(|l| (l.sku, l.quantity)).collect();
    let placed = shop
        .place_order(&id, &order.customer, &lines, order.payment_method.as_deref())
        .await?;
    // Read-your-writes: answer once the views show the order, so that the client's
    // next GET finds it; `visible` says whether they did within the wait.
    let visible = match placed {
        Some(position) => shop.views_show(position, VISIBLE_WITHIN).await?,
        None => true,
    };
    Ok((StatusCode::CREATED, Json(json!({ "order_id": id, "visible": visible }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayBody {
    payment_method: String,
}

async fn pay(State(shop): State<Shop>, Path(id): Path<String>, bytes: axum::body::Bytes) -> Answer {
    let pay: PayBody = body(&bytes)?;
    shop.pay(&id, &pay.payment_method).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "order_id": id }))).into_response())
}

async fn ship(State(shop): State<Shop>, Path(id): Path<String>) -> Answer {
    shop.ship(&id).await?;
    Ok(Json(json!({ "order_id": id, "status": "shipped" })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    reason: String,
}

async fn cancel(State(shop): State<Shop>, Path(id): Path<String>, bytes: axum::body::Bytes) -> Answer {
    let cancel: CancelBody = body(&bytes)?;
    shop.cancel(&id, &cancel.reason).await?;
    Ok(Json(json!({ "order_id": id, "status": "cancelled" })).into_response())
}

async fn orders(State(shop): State<Shop>) -> Answer {
    Ok(Json(json!({ "orders": shop.views.orders(&shop.db, None).await? })).into_response())
}

async fn order(State(shop): State<Shop>, Path(id): Path<String>) -> Answer {
    let stream = annals::aggregate::Repository::<crate::domain::Order>::stream_id(&id)?;
    let events = shop.store.read_stream(&stream, 1, 1_000).await?;
    if events.is_empty() {
        return Err(Failure(StatusCode::NOT_FOUND, "not_found", format!("no order {id}")));
    }
    let summary = shop.views.summary(&shop.db, &id).await?;
    Ok(Json(json!({ "order_id": id, "summary": summary, "events": events })).into_response())
}

async fn customer(State(shop): State<Shop>, Path(customer): Path<String>) -> Answer {
    Ok(Json(json!({ "orders": shop.views.orders(&shop.db, Some(&customer)).await? })).into_response())
}

async fn stock(State(shop): State<Shop>) -> Answer {
    Ok(Json(json!({ "stock": shop.views.stock(&shop.db).await? })).into_response())
}

async fn sales(State(shop): State<Shop>) -> Answer {
    Ok(Json(json!({ "sales": shop.views.sales(&shop.db).await? })).into_response())
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn wrong_method() -> Failure {
    Failure(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method".into(),
    )
}

async fn unknown() -> Failure {
    Failure(StatusCode::NOT_FOUND, "not_found", "no such route".into())
}

/// The shop's router.
pub fn router(shop: Shop) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/orders", post(place).get(orders))
        .route("/orders/{id}", get(order))
        .route("/orders/{id}/pay", post(pay))
        .route("/orders/{id}/ship", post(ship))
        .route("/orders/{id}/cancel", post(cancel))
        .route("/customers/{customer}/orders", get(customer))
        .route("/stock", get(stock))
        .route("/sales", get(sales))
        .fallback(unknown)
        .method_not_allowed_fallback(wrong_method)
        .with_state(shop)
}
