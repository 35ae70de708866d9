//! I8: records shipped from a leader continue the follower's log verbatim.

use super::*;

/// I8 on the engine: records shipped from a leader are stored verbatim (offsets,
/// versions, ids, payload text, times, append boundaries) with their command ids; a
/// batch that does not continue the log writes nothing; a truncation removes a
/// partition's end with its command ids; a promoted store takes no more records. The
/// leader here is an in-process store, the follower the engine under test.
pub async fn i8_replicated_records_continue_the_log(t: &TestStore) {
    let leader = Store::open("memory:").await.expect("memory store");
    let follower = t.open_with(|options| options.partitions(16)).await.expect("open");
    assert_eq!(
        follower.follow("http://leader.invalid", 3).await.expect("follow").epoch,
        3
    );
    let refused = follower
        .append(tagged_append(&stream("acct-1"), ExpectedVersion::Any, 0, 1))
        .await;
    assert!(
        matches!(refused, Err(Error::ReadOnlyReplica { .. })),
        "a follower took an append"
    );

    let mut commands = Vec::new();
    for i in 0..30u64 {
        let command = Uuid::new_v4();
        let request = tagged_append(&stream(&format!("acct-{}", i % 4)), ExpectedVersion::Any, i, i % 3 + 1);
        leader.append(request.command_id(command)).await.expect("append");
        commands.push(command);
    }
    let ship = |from: Vec<Offset>| {
        let (leader, follower) = (leader.clone(), follower.clone());
        async move {
            for (partition, mut next) in from.into_iter().enumerate() {
                loop {
                    let records = leader
                        .fetch(partition as u32, next, 3, Duration::ZERO)
                        .await
                        .expect("fetch");
                    let Some(last) = records.last() else { break };
                    next = last.offset + 1;
                    follower.apply_replicated(records).await.expect("apply");
                }
            }
        }
    };
    ship(vec![Offset(0); 16]).await;
    for partition in 0..16 {
        assert_eq!(
            read_whole_partition(&follower, partition).await,
            read_whole_partition(&leader, partition).await,
            "partition {partition} is not the leader's, record for record"
        );
    }
    for command in &commands {
        assert_eq!(
            follower.command_outcome(*command).await.expect("lookup"),
            leader.command_outcome(*command).await.expect("lookup"),
            "command ids are rebuilt from the records"
        );
    }

    // Records that do not continue the log write nothing.
    let acct = stream("acct-1");
    let partition = partition_for(&acct, 16);
    let held = read_whole_partition(&follower, partition).await;
    let overlap = follower.apply_replicated(held[held.len() - 1..].to_vec()).await;
    assert!(matches!(overlap, Err(Error::ReplicationGap { .. })), "{overlap:?}");
    assert_eq!(read_whole_partition(&follower, partition).await, held);

    // A truncation removes the partition's last append with its command id; the
    // records can be shipped again.
    let cut = held[..held.len() - 1]
        .iter()
        .rposition(|record| record.last_in_append)
        .map_or(0, |end| end + 1) as u64;
    let removed = &held[cut as usize..];
    let command = removed[0].metadata.command_id.expect("appended with a command id");
    let end = held.len() as u64;
    let moved = follower.truncate_replica(partition, cut, end - 1).await;
    assert!(
        matches!(moved, Err(Error::PartitionMoved { actual, .. }) if actual == end),
        "a truncation of a partition that moved went ahead: {moved:?}"
    );
    assert_eq!(read_whole_partition(&follower, partition).await, held);
    follower.truncate_replica(partition, cut, end).await.expect("truncate");
    assert_eq!(read_whole_partition(&follower, partition).await, held[..cut as usize]);
    assert_eq!(
        follower.stream_version(&removed[0].stream).await.expect("version"),
        removed[0].version - 1
    );
    assert_eq!(follower.command_outcome(command).await.expect("lookup"), None);
    // A subscriber waiting at the new end is woken by the records shipped again there
    // (the engine's next wake-up for the partition went back with the truncation).
    let mut waiting = follower.subscribe(partition, cut);
    let mut from = follower.high_watermarks().await.expect("hw");
    from.iter_mut()
        .enumerate()
        .for_each(|(p, next)| *next = Offset(if partition == p as u32 { cut } else { u64::MAX }));
    ship(from).await;
    assert_eq!(read_whole_partition(&follower, partition).await, held);
    let woken = tokio::time::timeout(Duration::from_secs(5), waiting.next()).await;
    assert!(
        matches!(&woken, Ok(Some(Ok(record))) if record.offset == cut),
        "a subscriber at the truncated end was not woken: {woken:?}"
    );

    // Promoted, it takes appends and no more records.
    assert_eq!(follower.promote().await.expect("promote").epoch, 4);
    let refused = follower.apply_replicated(removed.to_vec()).await;
    assert!(matches!(refused, Err(Error::NotAReplica)), "{refused:?}");
    let refused = follower.truncate_replica(partition, 0, held.len() as u64).await;
    assert!(matches!(refused, Err(Error::NotAReplica)), "a leader was truncated");
    assert_eq!(read_whole_partition(&follower, partition).await, held);
    follower
        .append(tagged_append(&acct, ExpectedVersion::Any, 99, 1))
        .await
        .expect("the promoted store appends");
}
