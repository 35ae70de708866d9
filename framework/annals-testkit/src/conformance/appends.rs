//! Appends: expected versions and appends that fail alone in a group commit.

use super::*;

/// Each expected version admits exactly the versions the contract says.
pub async fn expected_version_semantics(t: &TestStore) {
    let store = t.open().await;
    let id = stream("cart-1");
    let conflict = |result: annals::Result<AppendOutcome>| match result {
        Err(Error::WrongExpectedVersion { actual, .. }) => actual,
        other => panic!("expected a conflict, got {other:?}"),
    };
    let one = |expected| AppendRequest::new(id.clone(), expected).event(event("E", json!(0)));
    assert_eq!(conflict(store.append(one(ExpectedVersion::StreamExists)).await), 0);
    assert_eq!(conflict(store.append(one(ExpectedVersion::Exact(Version(1)))).await), 0);
    assert_eq!(
        store
            .append(one(ExpectedVersion::NoStream))
            .await
            .expect("new stream")
            .last_version,
        1
    );
    assert_eq!(conflict(store.append(one(ExpectedVersion::NoStream)).await), 1);
    assert_eq!(conflict(store.append(one(ExpectedVersion::Exact(Version(0)))).await), 1);
    assert_eq!(
        store
            .append(one(ExpectedVersion::StreamExists))
            .await
            .expect("exists")
            .last_version,
        2
    );
    assert_eq!(
        store
            .append(one(ExpectedVersion::Exact(Version(2))))
            .await
            .expect("exact")
            .last_version,
        3
    );
    assert_eq!(conflict(store.append(one(ExpectedVersion::Exact(Version(2)))).await), 3);
    assert_eq!(
        store.append(one(ExpectedVersion::Any)).await.expect("any").last_version,
        4
    );
    assert_eq!(store.append(one(ExpectedVersion::Exact(Version(0)))).await.ok(), None);
    let fresh = AppendRequest::new(stream("cart-2"), ExpectedVersion::Exact(Version(0))).event(event("E", json!(0)));
    assert_eq!(
        store
            .append(fresh)
            .await
            .expect("Exact(0) on a new stream")
            .last_version,
        1
    );
}

/// Appends checked in the same group commit fail alone: of 24 concurrent creations
/// of one stream exactly one succeeds, while 24 appends to fresh streams all succeed.
pub async fn concurrent_appends_fail_alone(t: &TestStore) {
    let store = t.open().await;
    let tasks: Vec<_> = (0..48)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = if n % 2 == 0 {
                    "race-0".to_owned()
                } else {
                    format!("race-{n}")
                };
                let request = AppendRequest::new(stream(&id), ExpectedVersion::NoStream).event(event("E", json!(n)));
                (n, store.append(request).await)
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        match task.await.expect("task") {
            (n, Ok(_)) if n % 2 == 0 => winners += 1,
            (_, Ok(outcome)) => assert_eq!(outcome.first_version, 1),
            (n, Err(Error::WrongExpectedVersion { actual: Version(1), .. })) if n % 2 == 0 => {}
            (n, other) => panic!("append {n}: {other:?}"),
        }
    }
    assert_eq!(winners, 1, "exactly one creation of race-0 wins");
    assert_eq!(store.stream_version(&stream("race-0")).await.expect("version"), 1);
}
