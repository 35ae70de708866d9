//! Writers in several processes: two `log-writer` processes append to one store at the
//! same time while this process reads every partition as it grows. A reader must never
//! see offset k+1 before offset k (I1); the bug this guards against is two processes
//! taking the same offset, or committing a partition's offsets out of order.

use std::time::Duration;

use annals::Store;

use crate::crash::tempfile_dir;
use crate::support::{audit, Writer};

async fn two_processes(url: &str) {
    let store = Store::open(url).await.expect("open");
    let mut writers = [Writer::spawn(url, 4, Some(60)), Writer::spawn(url, 4, Some(60))];

    let partitions = store.partition_count();
    let mut next = vec![0u64; partitions as usize];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    // Follow every partition until both writers have exited and a pass after that
    // finds nothing new.
    loop {
        assert!(tokio::time::Instant::now() < deadline, "writers took longer than 120 s");
        let exited = writers.iter_mut().all(Writer::has_exited);
        let mut progressed = false;
        for partition in 0..partitions {
            for record in store
                .read_partition(partition, next[partition as usize], 500)
                .await
                .expect("read")
            {
                assert_eq!(
                    record.offset, next[partition as usize],
                    "I1: partition {partition} skipped an offset"
                );
                next[partition as usize] += 1;
                progressed = true;
            }
        }
        if exited && !progressed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(if progressed { 1 } else { 50 })).await;
    }
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.finish());
    }
    assert_eq!(acked.len(), 2 * 4 * 60);
    assert_eq!(
        next.iter().sum::<u64>(),
        acked.iter().map(|ack| ack.events).sum::<u64>(),
        "records == acknowledged events"
    );
    audit(&store, &acked).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writers_in_two_processes() {
    let dir = tempfile_dir();
    let url = format!("sqlite://{}", dir.join("procs.db").display());
    Store::open(&url).await.expect("create").close().await;
    two_processes(&url).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writers_in_two_processes() {
    if let Some(url) = annals_testkit::postgres::fresh_schema_url().await {
        Store::open(&url).await.expect("create").close().await;
        two_processes(&url).await;
    }
}
