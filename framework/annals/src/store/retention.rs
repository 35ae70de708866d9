//! Retention and the scavenger. A retention rule (a maximum age, a maximum count, and
//! for one stream a version to truncate before) is a record of its own stream,
//! `annals.retention-c:CATEGORY` or `annals.retention-s:STREAM`, so rules replicate and
//! survive a failover with the log. The scavenger reads the rules, works out for each
//! stream the version below which its records have expired, and appends one
//! `annals.StreamTruncated` record per stream to a stream of the run,
//! `annals.scavenge-UUID`. Writing that record redacts the stream's records below the
//! version, in every engine and on every follower that copies it, as a deletion does
//! (see `lifecycle.rs`): offsets and versions stay, payloads and metadata go.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Store;
use crate::error::{Error, Result};
use crate::position::{ExpectedVersion, Version};
use crate::record::{NewEvent, RecordedEvent};
use crate::store::AppendRequest;
use crate::stream::{is_category, StreamId};

/// The type of a retention rule's record.
pub const RETENTION_SET: &str = "annals.RetentionSet";
/// The type of the record that truncates the stream it names.
pub const STREAM_TRUNCATED: &str = "annals.StreamTruncated";
/// The category of the retention rules' streams.
const RULES: &str = "annals.retention";
/// The category of the scavenger's streams.
const RUNS: &str = "annals.scavenge";
/// The categories of the streams that tell every node what to redact: deleting them
/// would leave a follower that has not copied them yet redacting less than its leader.
pub(crate) const BOOKKEEPING: [&str; 2] = [RULES, RUNS];
/// Truncations per append of a scavenge run.
const TRUNCATIONS_PER_APPEND: usize = 50;
/// Records one truncation redacts at most: a longer backlog is truncated in steps, so
/// no append of the run holds the engine for long and a throttle stays smooth.
const RECORDS_PER_TRUNCATION: u64 = 10_000;
/// Records one append of the run redacts at most.
const RECORDS_PER_APPEND: u64 = 20_000;
/// Streams listed per page while scavenging a category.
const PAGE: usize = 1_000;

/// What a retention rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionScope {
    /// Every stream of a category, but those with a rule of their own.
    Category(String),
    /// One stream.
    Stream(StreamId),
}

impl RetentionScope {
    /// The stream holding this scope's rule.
    fn rule_stream(&self) -> Result<StreamId> {
        let id = match self {
            RetentionScope::Category(category) => {
                if !is_category(category) {
                    return Err(Error::InvalidCategory {
                        category: category.clone(),
                    });
                }
                format!("{RULES}-c:{category}")
            }
            RetentionScope::Stream(stream) => format!("{RULES}-s:{stream}"),
        };
        StreamId::new(id).map_err(|_| Error::InvalidRetention {
            reason: "the stream id is too long to carry a retention rule".into(),
        })
    }

    /// The scope whose rule `stream` holds.
    fn of_rule_stream(stream: &StreamId) -> Option<RetentionScope> {
        let rest = stream.as_str().strip_prefix(RULES)?.strip_prefix('-')?;
        if let Some(category) = rest.strip_prefix("c:") {
            return Some(RetentionScope::Category(category.to_owned()));
        }
        StreamId::new(rest.strip_prefix("s:")?).ok().map(RetentionScope::Stream)
    }
}

impl std::fmt::Display for RetentionScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetentionScope::Category(category) => write!(f, "category {category}"),
            RetentionScope::Stream(stream) => write!(f, "stream {stream}"),
        }
    }
}

/// How long records are kept. Each limit that is set expires records on its own; a
/// rule with none set keeps everything (it removes an earlier rule).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Records older than this expire.
    #[serde(default, with = "seconds", rename = "max_age_secs")]
    pub max_age: Option<Duration>,
    /// Only the newest this many records of each stream are kept.
    #[serde(default)]
    pub max_count: Option<u64>,
    /// The records below this version expire (one stream's rule only).
    #[serde(default)]
    pub truncate_before: Option<Version>,
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.serialize_some(&duration.as_secs()),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_secs))
    }
}

impl Retention {
    /// The version below which a stream at `version` has expired under this rule, given
    /// the first version written within the age limit (`None`: none was). 1 when
    /// nothing has expired.
    fn expired_below(&self, version: Version, first_since: Option<Version>) -> Version {
        let mut below = Version(1);
        if let Some(count) = self.max_count {
            below = below.max(Version(version.0.saturating_sub(count) + 1));
        }
        if self.max_age.is_some() {
            below = below.max(first_since.unwrap_or(version + 1));
        }
        if let Some(before) = self.truncate_before {
            below = below.max(before.min(version + 1));
        }
        below
    }
}

/// How a scavenge runs.
#[derive(Debug, Clone, Copy)]
pub struct ScavengeOptions {
    /// Work out and report what would be redacted, but write nothing.
    pub dry_run: bool,
    /// The time ages are measured against.
    pub now: DateTime<Utc>,
    /// Redact at most this many records per second, leaving the engine to the
    /// appenders (as Kafka's log cleaner is throttled); `None` runs flat out.
    pub max_records_per_sec: Option<u64>,
}

impl Default for ScavengeOptions {
    fn default() -> Self {
        ScavengeOptions {
            dry_run: false,
            now: Utc::now(),
            max_records_per_sec: None,
        }
    }
}

/// What a scavenge did (or, in a dry run, would do), so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Scavenged {
    /// Streams whose rule was checked.
    pub streams_examined: u64,
    /// Streams truncated further.
    pub streams_truncated: u64,
    /// Records redacted: those below each truncation that an earlier truncation had
    /// not reached (records already redacted by a deletion are counted again).
    pub records_redacted: u64,
}

/// The stream and version an `annals.StreamTruncated` record names.
pub(crate) fn truncation_of(record: &RecordedEvent) -> Option<(StreamId, Version)> {
    #[derive(Deserialize)]
    struct Truncated {
        stream: String,
        before: u64,
    }
    if record.event_type != STREAM_TRUNCATED {
        return None;
    }
    let truncated: Truncated = serde_json::from_str(record.payload.get()).ok()?;
    Some((StreamId::new(truncated.stream).ok()?, Version(truncated.before)))
}

impl Store {
    /// Sets the retention rule of `scope`, replacing its earlier one. A rule with no
    /// limit removes it. `truncate_before` is for one stream only.
    pub async fn set_retention(&self, scope: &RetentionScope, retention: Retention) -> Result<()> {
        if retention.truncate_before.is_some() && matches!(scope, RetentionScope::Category(_)) {
            return Err(Error::InvalidRetention {
                reason: "truncate_before is set per stream, not per category".into(),
            });
        }
        let category = match scope {
            RetentionScope::Category(category) => category.as_str(),
            RetentionScope::Stream(stream) => stream.category(),
        };
        if category.starts_with(super::lifecycle::RESERVED_TYPE_PREFIX) {
            // Redacting them would leave followers without the records that tell them
            // what to redact, and break pending timers.
            return Err(Error::InvalidRetention {
                reason: format!("the {category} streams are the store's own"),
            });
        }
        if retention.max_count == Some(0) || retention.max_age == Some(Duration::ZERO) {
            return Err(Error::InvalidRetention {
                reason: "a limit of zero would expire every record: delete the stream instead".into(),
            });
        }
        let record = NewEvent::json(RETENTION_SET, &retention)?;
        let request = AppendRequest::new(scope.rule_stream()?, ExpectedVersion::Any).event(record);
        self.append_own(request).await?;
        Ok(())
    }

    /// Every retention rule in force, categories first, each in name order.
    pub async fn retention_rules(&self) -> Result<Vec<(RetentionScope, Retention)>> {
        let mut rules = Vec::new();
        let mut pages = Pages::of(RULES);
        while let Some(page) = pages.next(self).await? {
            for info in &page {
                let Some(scope) = RetentionScope::of_rule_stream(&info.stream) else {
                    continue;
                };
                let newest = self.read_stream(&info.stream, info.version, 1).await?;
                let Some(record) = newest.first() else { continue };
                let retention: Retention = record.decode()?;
                if retention != Retention::default() {
                    rules.push((scope, retention));
                }
            }
        }
        rules.sort_by_key(|(scope, _)| matches!(scope, RetentionScope::Stream(_)));
        Ok(rules)
    }

    /// Applies the retention rules once: every stream with a rule (its own, or its
    /// category's) is truncated below the version where its records expire. Redacted
    /// records keep their place in the log. `progress` is called after each batch of
    /// truncations with the totals so far.
    pub async fn scavenge(
        &self,
        options: ScavengeOptions,
        progress: &mut (dyn FnMut(&Scavenged) + Send),
    ) -> Result<Scavenged> {
        let rules = self.retention_rules().await?;
        let own: HashMap<&StreamId, &Retention> = (rules.iter())
            .filter_map(|(scope, rule)| match scope {
                RetentionScope::Stream(stream) => Some((stream, rule)),
                RetentionScope::Category(_) => None,
            })
            .collect();
        let mut run = Run::new(self, options);
        for (scope, rule) in &rules {
            match scope {
                RetentionScope::Stream(stream) => {
                    let version = self.stream_version(stream).await?;
                    run.examine(stream, version, rule, progress).await?;
                }
                RetentionScope::Category(category) => {
                    let mut pages = Pages::of(category);
                    while let Some(page) = pages.next(self).await? {
                        for info in page.iter().filter(|info| !own.contains_key(&info.stream)) {
                            run.examine(&info.stream, info.version, rule, progress).await?;
                        }
                    }
                }
            }
        }
        run.finish(progress).await
    }
}

/// The streams of a category, a page at a time, in id order.
struct Pages<'c> {
    category: &'c str,
    after: Option<StreamId>,
    done: bool,
}

impl<'c> Pages<'c> {
    fn of(category: &'c str) -> Self {
        Pages {
            category,
            after: None,
            done: false,
        }
    }

    async fn next(&mut self, store: &Store) -> Result<Option<Vec<crate::log::StreamInfo>>> {
        if self.done {
            return Ok(None);
        }
        let page = store
            .list_streams(Some(self.category), PAGE, self.after.as_ref())
            .await?;
        self.done = page.len() < PAGE;
        self.after = page.last().map(|last| last.stream.clone());
        Ok(Some(page))
    }
}

/// The scavenger in the background: a scavenge every period while it runs, on a store
/// that is the leader (a follower copies its leader's truncations instead).
#[derive(Debug)]
pub struct Scavenger {
    task: tokio::task::JoinHandle<()>,
}

impl Scavenger {
    /// Starts scavenging `store` every `every` (at least a second), the first time after
    /// one period, at most `max_records_per_sec` records a second when given.
    pub fn start(store: &Store, every: Duration, max_records_per_sec: Option<u64>) -> Scavenger {
        let store = store.clone();
        let every = every.max(Duration::from_secs(1));
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                // Asked each time: another process may have promoted or demoted the store.
                match store.refresh_replica().await {
                    Ok(replica) if replica.leader.is_none() => {}
                    Ok(_) => continue,
                    Err(error) => {
                        tracing::warn!(%error, "reading the store's role failed; trying again next period");
                        continue;
                    }
                }
                let options = ScavengeOptions {
                    max_records_per_sec,
                    ..ScavengeOptions::default()
                };
                match store.scavenge(options, &mut |_| {}).await {
                    Ok(done) if done.streams_truncated > 0 => {
                        tracing::info!(?done, "scavenged");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "scavenging failed; trying again next period"),
                }
            }
        });
        Scavenger { task }
    }

    /// Stops it, waiting for a scavenge under way to stop at its next step.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Scavenger {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One scavenge: its stream, the truncations waiting to be appended, the totals.
struct Run<'s> {
    store: &'s Store,
    options: ScavengeOptions,
    stream: StreamId,
    pending: Vec<NewEvent>,
    /// Records the pending truncations redact.
    pending_records: u64,
    totals: Scavenged,
    started: tokio::time::Instant,
}

impl<'s> Run<'s> {
    fn new(store: &'s Store, options: ScavengeOptions) -> Self {
        let stream = StreamId::trusted(format!("{RUNS}-{}", Uuid::now_v7().simple()));
        Run {
            store,
            options,
            stream,
            pending: Vec::new(),
            pending_records: 0,
            totals: Scavenged::default(),
            started: tokio::time::Instant::now(),
        }
    }

    /// Works out where `stream` (at `version`) expires under `rule`, and queues its
    /// truncation when that is further than it was truncated before.
    async fn examine(
        &mut self,
        stream: &StreamId,
        version: Version,
        rule: &Retention,
        progress: &mut (dyn FnMut(&Scavenged) + Send),
    ) -> Result<()> {
        self.totals.streams_examined += 1;
        let backend = &self.store.inner.backend;
        let first_since = match rule.max_age {
            Some(age) => {
                let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
                // No record is older than the epoch; a longer age expires nothing.
                let since = (self.options.now.checked_sub_signed(age))
                    .unwrap_or(DateTime::UNIX_EPOCH)
                    .max(DateTime::UNIX_EPOCH);
                backend.first_version_since(stream, since.timestamp_micros()).await?
            }
            None => None,
        };
        let below = rule.expired_below(version, first_since);
        let mut done = backend.truncated_before(stream).await?.unwrap_or(Version(1));
        if below <= done {
            return Ok(());
        }
        self.totals.streams_truncated += 1;
        while done < below {
            let step = below.min(done + RECORDS_PER_TRUNCATION);
            let record = NewEvent::json(STREAM_TRUNCATED, &serde_json::json!({"stream": stream, "before": step}))?;
            self.pending.push(record);
            self.pending_records += step.0 - done.0;
            self.totals.records_redacted += step.0 - done.0;
            done = step;
            if self.pending.len() >= TRUNCATIONS_PER_APPEND || self.pending_records >= RECORDS_PER_APPEND {
                self.flush(progress).await?;
            }
        }
        Ok(())
    }

    /// Appends the queued truncations (unless this is a dry run).
    async fn flush(&mut self, progress: &mut (dyn FnMut(&Scavenged) + Send)) -> Result<()> {
        let events = std::mem::take(&mut self.pending);
        self.pending_records = 0;
        if !events.is_empty() && !self.options.dry_run {
            let mut request = AppendRequest::new(self.stream.clone(), ExpectedVersion::Any);
            request.events = events;
            self.store.append_own(request).await?;
            if let Some(rate) = self.options.max_records_per_sec.filter(|rate| *rate > 0) {
                // Sleep until the records redacted so far are within the rate.
                let due = Duration::from_secs_f64(self.totals.records_redacted as f64 / rate as f64);
                tokio::time::sleep_until(self.started + due).await;
            }
        }
        progress(&self.totals);
        Ok(())
    }

    async fn finish(mut self, progress: &mut (dyn FnMut(&Scavenged) + Send)) -> Result<Scavenged> {
        self.flush(progress).await?;
        if self.totals.streams_truncated > 0 && !self.options.dry_run {
            self.store.inner.backend.reclaim().await?;
            crate::telemetry::records_redacted(self.totals.records_redacted);
        }
        Ok(self.totals)
    }
}
