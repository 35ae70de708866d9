//! The annals server: the store's HTTP API v1 (DESIGN §10), Prometheus metrics and a
//! small web console, on axum.
//!
//! Every error is JSON `{"error", "message", …}`; nothing is written on an error (I9).
//! With tokens ([`Tokens`]), every route but the health probes and the console's page
//! needs `Authorization: Bearer <token>` of a role high enough for it ([`Role`]).
//! Request bodies are capped; a larger one gets 413.
//!
//! ```no_run
//! # async fn demo() -> annals::Result<()> {
//! let store = annals::Store::open("sqlite://orders.db").await?;
//! let options = annals_server::ServerOptions::default();
//! let listener = tokio::net::TcpListener::bind(options.listen).await?;
//! annals_server::serve(store, listener, options, annals_server::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

mod acks;
mod auth;
mod console;
mod error;
pub mod follower;
mod routes;
mod samples;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use annals::Store;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub use auth::{Role, Tokens, TokensError};
pub use error::ApiError;

/// How the server runs.
#[derive(Clone)]
pub struct ServerOptions {
    /// Where it listens (default `127.0.0.1:7070`: loopback only).
    pub listen: SocketAddr,
    /// The bearer tokens accepted, each with its role; none (the default) leaves the
    /// API open.
    pub tokens: Tokens,
    /// The largest request body accepted (default 8 MiB).
    pub max_body_bytes: usize,
    /// Followers that must hold an append before it is acknowledged (default 0: the
    /// leader's own commit is enough).
    pub min_insync_followers: usize,
    /// How long an append waits for them; then the client gets `replication_timeout`
    /// (the append stays durable on the leader).
    pub ack_timeout: std::time::Duration,
    /// On a follower: its status (see [`Follower::handle`](follower::Follower::handle)),
    /// shown by `GET /v1/partitions` (lag per partition, state, errors) and the
    /// console.
    pub follower: Option<follower::FollowerHandle>,
    /// How connections are served: TLS and the time a client may take.
    pub transport: Transport,
    /// Most long polls (fetches waiting for records) at once (default 256). Past it, a
    /// fetch answers at once with what there is, so that waiting clients cannot take
    /// every connection the process can hold.
    pub max_long_polls: usize,
    /// How often the store is sampled for the console's charts (default 1 s; the last
    /// 900 samples are kept, 15 minutes at the default). Zero samples nothing.
    pub sample_every: std::time::Duration,
}

/// How a server's connections are served.
#[derive(Debug, Clone)]
pub struct Transport {
    /// Serve HTTPS with this certificate chain and key; plain HTTP without.
    pub tls: Option<TlsFiles>,
    /// How long a client may take to send a request's headers, and how long a new
    /// connection may stay silent before its first request (default 10 s); then the
    /// connection is closed.
    pub header_timeout: std::time::Duration,
    /// How long a client may take to send a request's body (default 30 s); then the
    /// request is answered `408 request_timeout`.
    pub body_timeout: std::time::Duration,
}

impl Transport {
    /// The scheme the server is reached by: `https` with TLS, `http` without.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Checks that the certificate and key can be used, so that a program can refuse
    /// to start before it announces an address that will not answer.
    pub async fn check(&self) -> std::io::Result<()> {
        match &self.tls {
            Some(files) => tls_config(files).await.map(drop),
            None => Ok(()),
        }
    }
}

/// The rustls configuration of `files`; an error names both files.
async fn tls_config(files: &TlsFiles) -> std::io::Result<axum_server::tls_rustls::RustlsConfig> {
    axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!(
                    "cannot use the certificate {} and key {}: {error}",
                    files.cert.display(),
                    files.key.display()
                ),
            )
        })
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            tls: None,
            header_timeout: std::time::Duration::from_secs(10),
            body_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// A certificate chain and its private key, PEM files, for HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's own certificate first.
    pub cert: std::path::PathBuf,
    /// The private key.
    pub key: std::path::PathBuf,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("listen", &self.listen)
            .field("tokens", &self.tokens)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("min_insync_followers", &self.min_insync_followers)
            .field("ack_timeout", &self.ack_timeout)
            .field("follower", &self.follower.is_some())
            .field("transport", &self.transport)
            .field("max_long_polls", &self.max_long_polls)
            .finish()
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            tokens: Tokens::none(),
            max_body_bytes: 8 * 1024 * 1024,
            min_insync_followers: 0,
            ack_timeout: std::time::Duration::from_secs(5),
            follower: None,
            transport: Transport::default(),
            max_long_polls: 256,
            sample_every: std::time::Duration::from_secs(1),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) max_body_bytes: usize,
    pub(crate) metrics: PrometheusHandle,
    pub(crate) followers: Arc<acks::Followers>,
    pub(crate) min_insync_followers: usize,
    pub(crate) ack_timeout: std::time::Duration,
    pub(crate) follower: Option<follower::FollowerHandle>,
    /// Set once the server is shutting down: long polls answer at once.
    pub(crate) stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// One permit per long poll that may wait.
    pub(crate) long_polls: Arc<tokio::sync::Semaphore>,
    pub(crate) body_timeout: std::time::Duration,
    /// The samples the console's charts draw.
    pub(crate) sampler: Arc<samples::Sampler>,
}

/// The process's Prometheus recorder, installed on first use. If the embedding program
/// installed another recorder already, the server keeps its own (unpublished) one.
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new().install_recorder().unwrap_or_else(|error| {
                tracing::warn!(%error, "a metrics recorder is already installed; /metrics shows only its own");
                PrometheusBuilder::new().build_recorder().handle()
            })
        })
        .clone()
}

/// The API's router on `store`. Call it inside a Tokio runtime: it starts sampling the
/// store for the console's charts, until the router is dropped.
///
/// Served this way, the router does not know when the server stops: a long poll in
/// flight holds a graceful shutdown until its wait runs out (30 s at most), and a
/// console's chart stream until it ends by itself (5 minutes at most; the page then
/// connects again). [`serve`] ends both at once.
pub fn router(store: Store, options: &ServerOptions) -> Router {
    app(store, options, Arc::new(tokio::sync::watch::Sender::new(false)))
}

fn app(store: Store, options: &ServerOptions, stopping: Arc<tokio::sync::watch::Sender<bool>>) -> Router {
    let sampler = samples::Sampler::start(store.clone(), options.follower.clone(), options.sample_every);
    let state = AppState {
        store,
        max_body_bytes: options.max_body_bytes,
        metrics: prometheus(),
        followers: Arc::default(),
        min_insync_followers: options.min_insync_followers,
        ack_timeout: options.ack_timeout,
        follower: options.follower.clone(),
        stopping,
        long_polls: Arc::new(tokio::sync::Semaphore::new(options.max_long_polls)),
        body_timeout: options.transport.body_timeout,
        sampler,
    };
    let role = |needed: Role| middleware::from_fn_with_state((options.tokens.clone(), needed), auth::require);
    let read = Router::new()
        .route("/v1/streams", get(routes::list_streams))
        .route("/v1/streams/{stream}/events", get(routes::read_stream))
        .route("/v1/partitions", get(routes::partitions))
        .route("/v1/partitions/{partition}/events", get(routes::fetch))
        .route("/v1/groups", get(routes::groups))
        .route("/v1/groups/{group}", get(routes::group))
        .route("/v1/groups/{group}/wait", get(routes::wait))
        .route("/v1/dead-letters", get(routes::dead_letters))
        .route("/v1/keys", get(routes::keys))
        .route("/v1/events/{id}", get(routes::event))
        .route("/v1/whoami", get(routes::whoami))
        .route("/v1/samples", get(samples::stream))
        .route("/metrics", get(routes::metrics))
        .route_layer(role(Role::Read));
    let write = Router::new()
        .route("/v1/streams/{stream}/events", post(routes::append))
        .route_layer(role(Role::Write));
    let admin = Router::new()
        .route("/v1/groups/{group}/reset", post(routes::reset))
        .route("/v1/groups/{group}/pause", post(routes::pause))
        .route("/v1/groups/{group}/resume", post(routes::resume))
        .route("/v1/dead-letters/{id}/retry", post(routes::retry_dead_letter))
        .route("/v1/dead-letters/{id}/skip", post(routes::skip_dead_letter))
        .route("/v1/streams/{stream}", delete(routes::delete_stream))
        .route("/v1/subjects/{subject}", delete(routes::erase_subject))
        .route_layer(role(Role::Admin));
    Router::new()
        .merge(read)
        .merge(write)
        .merge(admin)
        .route("/health", get(routes::live))
        .route("/health/live", get(routes::live))
        .route("/health/ready", get(routes::ready))
        .route("/", get(console::page))
        .route("/console/{asset}", get(console::asset))
        .fallback(routes::unknown_route)
        .method_not_allowed_fallback(routes::wrong_method)
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// One span, one counter and one latency sample per request.
async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().to_string();
    let span = tracing::info_span!("request", %method, %route);
    let started = Instant::now();
    let response = tracing::Instrument::instrument(next.run(request), span).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("annals_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("annals_http_request_seconds", "route" => route).record(started.elapsed().as_secs_f64());
    if let Some(error::ErrorCode(code)) = response.extensions().get::<error::ErrorCode>() {
        metrics::counter!("annals_http_errors_total", "code" => *code).increment(1);
    }
    response
}

/// Serves the API on `listener` until `shutdown` resolves; requests in flight (appends
/// included) are finished first, and long polls answer at once with what they have.
pub async fn serve(
    store: Store,
    listener: tokio::net::TcpListener,
    options: ServerOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stopping = Arc::new(tokio::sync::watch::Sender::new(false));
    let app = app(store, &options, stopping.clone());
    let shutdown = async move {
        shutdown.await;
        stopping.send_replace(true);
    };
    serve_router(app, listener, &options.transport, shutdown).await
}

/// Serves `router` on `listener` as [`serve`] serves the API, over plain HTTP or HTTPS
/// and with the timeouts of `transport`, until `shutdown` completes; then answers the
/// requests in flight (for up to 30 seconds) and returns.
pub async fn serve_router(
    router: Router,
    listener: tokio::net::TcpListener,
    transport: &Transport,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(address = %listener.local_addr()?, scheme = transport.scheme(), "annals serving");
    let handle = axum_server::Handle::new();
    tokio::spawn({
        let handle = handle.clone();
        async move {
            shutdown.await;
            handle.graceful_shutdown(Some(std::time::Duration::from_secs(30)));
        }
    });
    // HTTP/1.1 only: its header timeout is what closes idle connections, and no
    // client of the API needs HTTP/2.
    let mut server = axum_server::from_tcp(listener.into_std()?)?
        .handle(handle)
        .http1_only()
        .first_request_timeout(transport.header_timeout);
    server
        .http_builder()
        .http1()
        .header_read_timeout(transport.header_timeout);
    // Answers are small and latency-bound: send them at once, not after Nagle's wait.
    let tcp = axum_server::accept::NoDelayAcceptor::new();
    let app = router.into_make_service();
    match &transport.tls {
        None => server.acceptor(tcp).serve(app).await,
        Some(files) => {
            let config = tls_config(files).await?;
            let tls = axum_server::tls_rustls::RustlsAcceptor::new(config).acceptor(tcp);
            server.acceptor(tls).serve(app).await
        }
    }
}

/// A server running on a task of its own, on a loopback port the system chose: what
/// tests and programs that embed a server start. Dropping it shuts the server down.
///
/// ```no_run
/// # async fn demo(store: annals::Store) -> std::io::Result<()> {
/// let server = annals_server::Spawned::start(store, annals_server::ServerOptions::default()).await?;
/// let answer = reqwest::get(format!("{}/v1/partitions", server.url())).await;
/// server.stop().await?;
/// # Ok(()) }
/// ```
pub struct Spawned {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Spawned {
    /// Serves `store` on `127.0.0.1` at a free port.
    pub async fn start(store: Store, options: ServerOptions) -> std::io::Result<Spawned> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("{}://{}", options.transport.scheme(), listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(store, listener, options, async {
            let _ = stopped.await;
        }));
        Ok(Spawned {
            url,
            stop: Some(stop),
            task,
        })
    }

    /// Its base URL, `http://127.0.0.1:PORT` (`https://…` with TLS).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Shuts it down gracefully (requests in flight are answered) and waits until it
    /// has stopped.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.map_err(std::io::Error::other)?
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
