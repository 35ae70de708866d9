//! Crash consistency: a writer process is SIGKILLed at random points, again and again,
//! while it appends with command ids. The bug this guards against is an append that
//! was acknowledged (and printed) but is missing, torn or duplicated after the restart:
//! a commit acknowledged before it reached the disk, a batch written in pieces, or a
//! command-id table that does not survive. The writer runs four tasks, or in every
//! other round one, whose appends commit on their own rather than in the writer's
//! batches. After twelve kills the store must hold every acknowledged append where it
//! was acknowledged, nothing torn, no gap.

use std::time::Duration;

use annals::Store;
use rand::Rng;

use crate::support::{audit, Ack, Writer};

const KILLS: usize = 12;

async fn kill_repeatedly(url: &str) {
    let mut acked: Vec<Ack> = Vec::new();
    let mut rng = rand::thread_rng();
    for round in 0..KILLS {
        // One task in odd rounds: its appends come one at a time and commit on the
        // task's own thread or session, not through the writer's batches.
        let tasks = if round % 2 == 1 { 1 } else { 4 };
        let writer = Writer::spawn(url, tasks, None);
        writer
            .first_ack
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("round {round}: the writer acknowledged nothing in 60 s"));
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..400))).await;
        let acks = writer.kill();
        assert!(!acks.is_empty());
        acked.extend(acks);
    }
    let store = Store::open(url).await.expect("reopen after the kills");
    audit(&store, &acked).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_sigkill() {
    let dir = tempfile_dir();
    let url = format!("sqlite://{}", dir.join("crash.db").display());
    kill_repeatedly(&url).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_sigkill() {
    if let Some(url) = annals_testkit::postgres::fresh_schema_url().await {
        kill_repeatedly(&url).await;
    }
}

/// A fresh directory under the system temp dir for one test.
pub(crate) fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("annals-it-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}
