//! A consumer-group member in a process of its own, for the group tests: it builds the
//! testkit's tally projection in group `tally` until SIGTERM (graceful: commit, leave)
//! or SIGKILL.
//!
//! Usage: `projection-worker STORE_URL MEMBER_ID`. Prints `joined` once it is a member.

use std::time::Duration;

use annals::group::{GroupMember, GroupOptions};
use annals::Store;
use annals_testkit::tally::Tally;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> annals::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(member_id)) = (args.next(), args.next()) else {
        eprintln!("usage: projection-worker STORE_URL MEMBER_ID");
        std::process::exit(2);
    };
    let mut terminate = signal(SignalKind::terminate())?;
    let store = Store::open(&url).await?;
    let options = GroupOptions {
        batch_size: 50,
        session_timeout: Duration::from_secs(2),
        heartbeat_interval: Duration::from_millis(200),
        member_id: Some(member_id),
        ..GroupOptions::default()
    };
    let member = GroupMember::projection(&store, "tally", Tally::new("tally"), options).await?;
    println!("joined");
    terminate.recv().await;
    member.shutdown().await?;
    store.close().await;
    Ok(())
}
