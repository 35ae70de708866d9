//! The web console: one static page whose script reads the API (partitions, streams
//! and their events, consumer groups with lag, dead letters) and refreshes every 2 s.
//! The page holds no data, so it is served without a token; its requests send the one
//! typed into it.

use axum::response::Html;

/// `GET /`.
pub(crate) async fn page() -> Html<&'static str> {
    Html(include_str!("console/index.html"))
}
