//! `annals serve`: the HTTP API v1, metrics and the web console on a store.

use std::net::SocketAddr;

use annals_server::ServerOptions;

use crate::output::{CliError, CliResult};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Bearer token required on every route but /health.
    #[arg(long, env = "ANNALS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Followers that must hold an append before it is acknowledged.
    #[arg(long, default_value_t = 0)]
    min_insync_followers: usize,
    /// How long an append waits for them, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    ack_timeout_ms: u64,
}

pub(crate) async fn run(db: &str, args: Args) -> CliResult {
    check_token(args.token.as_deref())?;
    // Like every command but init, serve never creates a store: a mistyped --db is an
    // error, not a new empty store.
    let store = super::open_existing(db).await?;
    let listener = listen(args.listen).await?;
    let options = ServerOptions {
        listen: args.listen,
        token: args.token,
        max_body_bytes: args.max_body_bytes,
        min_insync_followers: args.min_insync_followers,
        ack_timeout: std::time::Duration::from_millis(args.ack_timeout_ms),
        follower: None,
    };
    annals_server::serve(store.clone(), listener, options, annals_server::shutdown_signal())
        .await
        .map_err(annals::Error::Io)?;
    store.close().await;
    Ok(())
}

/// Refuses an empty `--token`: it would look like protection and be none.
pub(crate) fn check_token(token: Option<&str>) -> CliResult {
    match token {
        Some(token) if token.trim().is_empty() => Err(CliError::Usage("--token must not be empty".into())),
        _ => Ok(()),
    }
}

/// Binds `address` and says where it listens: scripts read the address (useful with
/// port 0) from that line.
pub(crate) async fn listen(address: SocketAddr) -> CliResult<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| CliError::Usage(format!("cannot listen on {address}: {error}")))?;
    println!(
        "listening on http://{}",
        listener.local_addr().map_err(annals::Error::Io)?
    );
    Ok(listener)
}
