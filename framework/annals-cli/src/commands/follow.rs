//! `annals follow` and `annals promote`: a log-shipping follower that serves reads,
//! and its promotion to leader.

use std::net::SocketAddr;
use std::path::PathBuf;

use annals_server::follower::{self, FollowOptions, Follower, Leader, Truncation};
use annals_server::ServerOptions;
use serde_json::json;

use crate::output::{CliError, CliResult, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The leader's base URL, e.g. http://10.0.0.5:7070.
    #[arg(long)]
    leader: String,
    /// The leader's bearer token (the read role is enough).
    #[arg(long, env = "ANNALS_LEADER_TOKEN", hide_env_values = true)]
    leader_token: Option<String>,
    /// For an https:// leader whose certificate comes from a private authority: that
    /// authority's certificate (PEM), the only one trusted.
    #[arg(long)]
    leader_ca_file: Option<PathBuf>,
    /// Address to serve reads on.
    #[arg(long, default_value = "127.0.0.1:7071")]
    listen: SocketAddr,
    #[command(flatten)]
    tokens: super::serve::TokenArgs,
    #[command(flatten)]
    transport: super::serve::TransportArgs,
    /// When this store holds records the leader lacks, cut it back to the last record
    /// the two share (at most --max-truncate records), instead of stopping.
    #[arg(long, requires = "max_truncate")]
    truncate_diverged: bool,
    /// The most records --truncate-diverged may remove, over all partitions.
    #[arg(long, requires = "truncate_diverged")]
    max_truncate: Option<u64>,
    /// Where --truncate-diverged writes the records it removes, first (JSON lines; a
    /// new file). Default: `annals-truncated-<unix ms>.jsonl` in the current directory.
    #[arg(long, requires = "truncate_diverged")]
    truncated_file: Option<PathBuf>,
}

pub(crate) async fn run(db: &str, args: Args) -> CliResult {
    let tokens = args.tokens.tokens()?;
    let leader = Leader {
        url: args.leader.trim_end_matches('/').to_owned(),
        token: args.leader_token,
        ca_file: args.leader_ca_file,
    };
    let options = FollowOptions {
        truncate_diverged: args.max_truncate.map(|max_records| Truncation {
            max_records,
            removed_to: args.truncated_file.unwrap_or_else(|| {
                PathBuf::from(format!(
                    "annals-truncated-{}.jsonl",
                    chrono::Utc::now().timestamp_millis()
                ))
            }),
        }),
    };
    // One signal listener for the whole run, so a SIGTERM is never missed between two.
    let mut terminate = std::pin::pin!(annals_server::shutdown_signal());
    let store_options = super::store_options(db)?;
    let store = tokio::select! {
        () = &mut terminate => return Ok(()),
        store = follower::open_store(&store_options, &leader) => store.map_err(CliError::Follow)?,
    };
    let mut follower = Follower::start(store.clone(), leader, options);

    let transport = args.transport.transport();
    let listener = super::serve::listen(args.listen, &transport).await?;
    let server_options = ServerOptions {
        listen: args.listen,
        tokens,
        transport,
        follower: Some(follower.handle()),
        ..ServerOptions::default()
    };
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(annals_server::serve(
        store.clone(),
        listener,
        server_options,
        async move {
            let _ = stopped.changed().await;
        },
    ));
    let outcome = tokio::select! {
        () = &mut terminate => Ok(true),
        stopped = follower.wait() => stopped.map(|()| false),
    };
    if let (Ok(false), None) = (&outcome, store.replica().leader) {
        // Promoted: keep serving, now as the leader, until told to stop.
        eprintln!("promoted to leader at epoch {}: serving appends", store.replica().epoch);
        terminate.await;
    }
    let _ = stop.send(true);
    let _ = server.await;
    let stopped = follower.stop().await;
    store.close().await;
    outcome.map(drop).and(stopped).map_err(CliError::Follow)
}

pub(crate) async fn promote(db: &str, out: &Output) -> CliResult {
    let store = super::open_existing(db).await?;
    let promoted = store.promote().await;
    store.close().await;
    let promoted = promoted?;
    out.print(
        &json!({"role": promoted.role(), "leader_epoch": promoted.epoch}),
        |_| format!("now the leader, at epoch {}", promoted.epoch),
    );
    Ok(())
}
