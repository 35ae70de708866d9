//! The web console: one static page whose script reads the API (partitions, streams
//! and their events, consumer groups with lag, dead letters), refreshes its lists every
//! 2 s, and draws charts from the samples `GET /v1/samples` pushes. The page and its
//! assets hold no data, so they are served without a token; its requests send the one
//! typed into it.

use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

/// `GET /`.
pub(crate) async fn page() -> Html<&'static str> {
    Html(include_str!("console/index.html"))
}

/// `GET /console/{asset}`: the charting library the page uses (see
/// `console/vendor/README.md`), served from the binary: the page needs no other network.
pub(crate) async fn asset(Path(asset): Path<String>) -> Response {
    let (body, kind) = match asset.as_str() {
        "uPlot.iife.min.js" => (include_str!("console/vendor/uPlot.iife.min.js"), "text/javascript"),
        "uPlot.min.css" => (include_str!("console/vendor/uPlot.min.css"), "text/css"),
        _ => return crate::routes::unknown_route().await.into_response(),
    };
    let cache = "public, max-age=86400";
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, cache)], body).into_response()
}
