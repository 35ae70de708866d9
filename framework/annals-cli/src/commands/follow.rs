//! `annals follow` and `annals promote`: a log-shipping follower that serves reads,
//! and its promotion to leader.

use std::net::SocketAddr;
use std::time::Duration;

use annals_server::follower::{Follower, Leader};
use annals_server::ServerOptions;
use serde_json::json;

use crate::output::{CliError, CliResult, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The leader's base URL, e.g. http://10.0.0.5:7070.
    #[arg(long)]
    leader: String,
    /// The leader's bearer token.
    #[arg(long, env = "ANNALS_LEADER_TOKEN", hide_env_values = true)]
    leader_token: Option<String>,
    /// Address to serve reads on.
    #[arg(long, default_value = "127.0.0.1:7071")]
    listen: SocketAddr,
    /// Bearer token required by this follower's own API.
    #[arg(long, env = "ANNALS_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

fn follow_error(error: annals_server::follower::FollowError) -> CliError {
    match error {
        annals_server::follower::FollowError::Store(error) => error.into(),
        other => CliError::Usage(other.to_string()),
    }
}

pub(crate) async fn run(db: &str, args: Args) -> CliResult {
    super::serve::check_token(args.token.as_deref())?;
    let leader = Leader {
        url: args.leader.trim_end_matches('/').to_owned(),
        token: args.leader_token,
    };
    // The follower's store has the leader's partition count; it is created on first run.
    let count = leader.partition_count().await.map_err(follow_error)?;
    let store = annals::StoreOptions::from_url(db)?.partitions(count).open().await?;
    let follower = Follower::start(store.clone(), leader).await.map_err(follow_error)?;

    let listener = super::serve::listen(args.listen).await?;
    let options = ServerOptions {
        listen: args.listen,
        token: args.token,
        replication_lag: Some(follower.lag_handle()),
        ..ServerOptions::default()
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = {
        let mut stopped = stopped.clone();
        tokio::spawn(annals_server::serve(store.clone(), listener, options, async move {
            let _ = stopped.changed().await;
        }))
    };
    let lag = {
        let follower_lag = follower_lag_reader(&follower);
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            loop {
                for (partition, lag) in follower_lag().into_iter().enumerate() {
                    metrics::gauge!("annals_replication_lag", "partition" => partition.to_string()).set(lag as f64);
                }
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        })
    };
    // One signal listener for the whole run, so a SIGTERM is never missed between two.
    let mut terminate = std::pin::pin!(annals_server::shutdown_signal());
    let mut follower = follower;
    let outcome = tokio::select! {
        () = &mut terminate => Ok(true),
        stopped = follower.wait() => stopped.map(|()| false).map_err(follow_error),
    };
    if let (Ok(false), None) = (&outcome, store.replica().leader) {
        // Promoted: keep serving, now as the leader, until told to stop.
        eprintln!("promoted to leader at epoch {}: serving appends", store.replica().epoch);
        terminate.await;
    }
    let _ = stop.send(true);
    let _ = lag.await;
    let _ = server.await;
    let stopped = follower.stop().await.map_err(follow_error);
    store.close().await;
    outcome.map(drop).and(stopped)
}

/// A closure reading the follower's lag (the follower itself is moved later).
fn follower_lag_reader(follower: &Follower) -> impl Fn() -> Vec<u64> + Send + 'static {
    let lag = follower.lag_handle();
    move || {
        lag.iter()
            .map(|l| l.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }
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
