//! A process that appends to a store for the integration tests, which kill it.
//!
//! `log-writer STORE_URL TASKS [APPENDS_PER_TASK]`: TASKS concurrent tasks append 1–4
//! events at a time to streams `crash-0` … `crash-39`, each append with a fresh command
//! id. Every acknowledged append is printed, and flushed, as one line:
//!
//! `ack COMMAND_ID STREAM PARTITION FIRST_OFFSET LAST_OFFSET FIRST_VERSION LAST_VERSION EVENTS`
//!
//! Each event's payload is `{"command": id, "i": i, "of": events}`, so a reader can
//! check that every append is whole. Runs until killed, or until each task has made
//! APPENDS_PER_TASK appends.

use std::io::Write;

use annals::{AppendRequest, ExpectedVersion, NewEvent, Store, StreamId};
use uuid::Uuid;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: log-writer STORE_URL TASKS [APPENDS_PER_TASK]")?;
    let tasks: u64 = args.next().ok_or("TASKS is missing")?.parse()?;
    let limit: Option<u64> = args.next().map(|n| n.parse()).transpose()?;
    let store = Store::open(&url).await?;

    let writers: Vec<_> = (0..tasks)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut state = u64::from(std::process::id()) << 8 | (task + 1);
                let mut appends = 0;
                while limit.is_none_or(|limit| appends < limit) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let stream = StreamId::new(format!("crash-{}", state % 40))?;
                    let events = 1 + (state >> 32) % 4;
                    let command = Uuid::new_v4();
                    let mut request = AppendRequest::new(stream.clone(), ExpectedVersion::Any).command_id(command);
                    for i in 0..events {
                        let payload = serde_json::json!({"command": command, "i": i, "of": events});
                        request = request.event(NewEvent::json("Tick", &payload)?);
                    }
                    let o = store.append(request).await?;
                    let line = format!(
                        "ack {command} {stream} {} {} {} {} {} {events}\n",
                        o.partition, o.first_offset, o.last_offset, o.first_version, o.last_version
                    );
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(line.as_bytes())?;
                    stdout.flush()?;
                    appends += 1;
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .collect();
    for writer in writers {
        writer.await?.map_err(|error| error.to_string())?;
    }
    store.close().await;
    Ok(())
}
