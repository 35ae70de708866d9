//! `annals serve`: the HTTP API v1, metrics and the web console on a store.

use std::net::SocketAddr;
use std::path::PathBuf;

use annals_server::{Role, ServerOptions, TlsFiles, Tokens, Transport};

use crate::output::{CliError, CliResult};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    #[command(flatten)]
    tokens: TokenArgs,
    #[command(flatten)]
    transport: TransportArgs,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Followers that must hold an append before it is acknowledged.
    #[arg(long, default_value_t = 0)]
    min_insync_followers: usize,
    /// How long an append waits for them, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    ack_timeout_ms: u64,
    /// Apply the retention rules every this many seconds (see `annals scavenge`); off
    /// unless given.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    scavenge_every: Option<u64>,
    /// With --scavenge-every: redact at most this many records per second.
    #[arg(long, requires = "scavenge_every", value_parser = clap::value_parser!(u64).range(1..))]
    scavenge_max_records_per_sec: Option<u64>,
}

pub(crate) async fn run(db: &str, args: Args) -> CliResult {
    let tokens = args.tokens.tokens()?;
    // Like every command but init, serve never creates a store: a mistyped --db is an
    // error, not a new empty store.
    let store = super::open_existing(db).await?;
    let transport = args.transport.transport();
    let listener = listen(args.listen, &transport).await?;
    let options = ServerOptions {
        listen: args.listen,
        tokens,
        max_body_bytes: args.max_body_bytes,
        min_insync_followers: args.min_insync_followers,
        ack_timeout: std::time::Duration::from_millis(args.ack_timeout_ms),
        transport,
        ..ServerOptions::default()
    };
    let scavenger = (args.scavenge_every).map(|seconds| {
        let every = std::time::Duration::from_secs(seconds);
        annals::Scavenger::start(&store, every, args.scavenge_max_records_per_sec)
    });
    let served = annals_server::serve(store.clone(), listener, options, annals_server::shutdown_signal()).await;
    if let Some(scavenger) = scavenger {
        scavenger.shutdown().await;
    }
    served.map_err(annals::Error::Io)?;
    store.close().await;
    Ok(())
}

/// How a served API's connections are served.
#[derive(Debug, clap::Args)]
pub(crate) struct TransportArgs {
    /// Serve HTTPS with this certificate chain (PEM), the server's certificate first.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Longest a client may take to send a request's headers, or stay silent on a new
    /// connection, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// Longest a client may take to send a request's body, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    body_timeout_ms: u64,
}

impl TransportArgs {
    pub(crate) fn transport(&self) -> Transport {
        Transport {
            tls: self
                .tls_cert
                .clone()
                .zip(self.tls_key.clone())
                .map(|(cert, key)| TlsFiles { cert, key }),
            header_timeout: std::time::Duration::from_millis(self.header_timeout_ms),
            body_timeout: std::time::Duration::from_millis(self.body_timeout_ms),
        }
    }
}

/// The bearer tokens a served API accepts. With none, every route is open.
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// A bearer token with the admin role: it may do everything.
    #[arg(long, env = "ANNALS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Tokens with roles, as `ROLE:TOKEN` separated by commas; the roles are read,
    /// write (reads and appends) and admin.
    #[arg(long, env = "ANNALS_TOKENS", hide_env_values = true)]
    tokens: Option<String>,
    /// A file of tokens with roles, one `ROLE TOKEN` per line (`#` starts a comment).
    #[arg(long)]
    tokens_file: Option<PathBuf>,
}

impl TokenArgs {
    /// All of them together. An empty token is refused: it would look like
    /// protection and be none.
    pub(crate) fn tokens(&self) -> CliResult<Tokens> {
        let usage = |error: annals_server::TokensError| CliError::Usage(error.to_string());
        let mut tokens = Tokens::none();
        if let Some(token) = &self.token {
            tokens = tokens
                .with(token.clone(), Role::Admin)
                .map_err(|_| CliError::Usage("--token must not be empty".into()))?;
        }
        let mut lists = Vec::new();
        if let Some(list) = &self.tokens {
            lists.push(list.clone());
        }
        if let Some(file) = &self.tokens_file {
            let text = std::fs::read_to_string(file)
                .map_err(|error| CliError::Usage(format!("cannot read {}: {error}", file.display())))?;
            lists.push(text);
        }
        for list in lists {
            tokens = tokens.merge(Tokens::parse(&list).map_err(usage)?);
        }
        Ok(tokens)
    }
}

/// Checks the transport's certificate, binds `address` and says where it listens:
/// scripts read the address (useful with port 0) from that line, so it is printed only
/// once the server can serve there.
pub(crate) async fn listen(
    address: SocketAddr,
    transport: &annals_server::Transport,
) -> CliResult<tokio::net::TcpListener> {
    transport.check().await.map_err(annals::Error::Io)?;
    let scheme = transport.scheme();
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| CliError::Usage(format!("cannot listen on {address}: {error}")))?;
    println!(
        "listening on {scheme}://{}",
        listener.local_addr().map_err(annals::Error::Io)?
    );
    Ok(listener)
}
