//! Where subjects' keys live: the key table of an annals database (the store's own, or
//! another one: `StoreOptions::keys`), or memory for `memory:` stores.
//!
//! The table (`migrations/*/0010_personal_data.sql`) holds a row per subject: its key,
//! or none once erased (the row stays, so an erased subject can never be written again),
//! and `seq`, the place of its latest change, by which a follower copies what changed.
//! Keys are written in transactions that take `seq`s in commit order (SQLite's one
//! writer; an advisory lock on PostgreSQL), so a copy that read up to some `seq` has
//! every change below it. A second table remembers which streams hold which subjects'
//! fields, so that snapshots of those streams are sealed too.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Key, Subject, SubjectKey};
use crate::error::{Error, Result};
use crate::readmodel::{Db, Engine, Param, Tx};
use crate::stream::StreamId;

/// What the key table holds for some subjects: a key, or `None` (erased, or unknown).
pub(crate) type Found = HashMap<Subject, Option<Key>>;

/// The key store behind a [`Store`](crate::Store).
#[async_trait]
pub(crate) trait Keys: Send + Sync {
    /// The keys of `subjects`, created where missing, for sealing fields of `stream`
    /// (remembered as holding them); `SubjectErased` if one was erased.
    async fn for_writing(&self, subjects: &[Subject], stream: &StreamId) -> Result<Vec<Key>>;
    /// What the key table holds for `subjects`: a key, or `None` (erased, or unknown).
    async fn for_reading(&self, subjects: &[Subject]) -> Result<Found>;
    /// The subjects whose fields `stream` holds.
    async fn subjects_of(&self, stream: &StreamId) -> Result<Vec<Subject>>;
    /// Remembers that each stream holds fields of its subject (records a follower
    /// copied).
    async fn note(&self, pairs: &[(StreamId, Subject)]) -> Result<()>;
    /// Deletes `subject`'s key (marking it erased even if it had none): whether it had
    /// one, and how many streams hold its fields.
    async fn erase(&self, subject: &Subject, at_us: i64) -> Result<(bool, u64)>;
    /// The changes after `seq`, in order, at most `limit`.
    async fn since(&self, seq: u64, limit: usize) -> Result<Vec<SubjectKey>>;
    /// Takes changes copied from another store: keys it lacks, and erasures. An erased
    /// subject stays erased. Returns how many keys this erased.
    async fn import(&self, changes: &[SubjectKey], at_us: i64) -> Result<u64>;
}

/// The key store of a store whose engine is `backend`: its database's key table, or
/// memory.
pub(crate) fn open(read_models: Option<Db>) -> Arc<dyn Keys> {
    match read_models {
        Some(db) => Arc::new(SqlKeys { db }),
        None => Arc::new(MemoryKeys::default()),
    }
}

/// `$first, $first+1, …`, `count` placeholders.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn subject_params(subjects: &[Subject]) -> Vec<Param> {
    subjects.iter().map(|subject| subject.as_str().into()).collect()
}

fn key_of(bytes: Option<Vec<u8>>) -> Result<Option<Key>> {
    bytes
        .map(|bytes| {
            Key::from_bytes(&bytes).ok_or(Error::Crypto {
                what: "reading a stored key",
            })
        })
        .transpose()
}

/// The key table of an annals database.
struct SqlKeys {
    db: Db,
}

/// Takes the next `seq`s in commit order: SQLite has one writer; on PostgreSQL
/// concurrent key writers queue on this lock until commit.
async fn lock_seq(tx: &mut Tx) -> Result<()> {
    if tx.engine() == Engine::Postgres {
        tx.execute("SELECT pg_advisory_xact_lock(hashtext('annals_subject_keys'))", &[])
            .await?;
    }
    Ok(())
}

/// Subjects asked for per statement when revealing.
const READ_CHUNK: usize = 500;

const NEXT_SEQ: &str = "(SELECT coalesce(max(seq), 0) + 1 FROM annals_subject_keys)";

#[async_trait]
impl Keys for SqlKeys {
    async fn for_writing(&self, subjects: &[Subject], stream: &StreamId) -> Result<Vec<Key>> {
        // The common case reads only: every key exists and the stream is known to hold
        // them.
        let sql = format!(
            "SELECT k.subject, k.key, CASE WHEN EXISTS (SELECT 1 FROM annals_subject_streams s \
             WHERE s.stream_id = $1 AND s.subject = k.subject) THEN 1 ELSE 0 END \
             FROM annals_subject_keys k WHERE k.subject IN ({})",
            placeholders(2, subjects.len())
        );
        let mut params = vec![Param::from(stream.as_str())];
        params.extend(subject_params(subjects));
        let rows = self.db.query(&sql, params).await?;
        let mut found = HashMap::new();
        let mut complete = rows.len() == subjects.len();
        for row in rows {
            let subject = Subject::new(row.get::<String>(0)?)?;
            let Some(key) = key_of(row.get(1)?)? else {
                return Err(Error::SubjectErased { subject });
            };
            complete &= row.get::<i64>(2)? == 1;
            found.insert(subject.as_str().to_owned(), Some(key));
        }
        if !complete {
            let (subjects, stream) = (subjects.to_vec(), stream.clone());
            found = self
                .db
                .transaction(move |tx| {
                    Box::pin(async move {
                        lock_seq(tx).await?;
                        // An erased subject refuses the whole append before anything is
                        // written: no key for the others, no note of the stream.
                        for subject in &subjects {
                            let erased = tx
                                .query_opt(
                                    "SELECT 1 FROM annals_subject_keys WHERE subject = $1 AND key IS NULL",
                                    &[subject.as_str().into()],
                                )
                                .await?;
                            if erased.is_some() {
                                return Err(Error::SubjectErased {
                                    subject: subject.clone(),
                                });
                            }
                        }
                        let mut found = HashMap::new();
                        for subject in &subjects {
                            let fresh = Key::generate()?;
                            tx.execute(
                                &format!(
                                    "INSERT INTO annals_subject_keys (subject, key, seq) VALUES ($1, $2, {NEXT_SEQ}) \
                                     ON CONFLICT (subject) DO NOTHING"
                                ),
                                &[subject.as_str().into(), fresh.as_bytes().to_vec().into()],
                            )
                            .await?;
                            tx.execute(
                                "INSERT INTO annals_subject_streams (stream_id, subject) VALUES ($1, $2) \
                                 ON CONFLICT (stream_id, subject) DO NOTHING",
                                &[stream.as_str().into(), subject.as_str().into()],
                            )
                            .await?;
                            let row = tx
                                .query_one(
                                    "SELECT key FROM annals_subject_keys WHERE subject = $1",
                                    &[subject.as_str().into()],
                                )
                                .await?;
                            found.insert(subject.as_str().to_owned(), key_of(row.get(0)?)?);
                        }
                        Ok(found)
                    })
                })
                .await?;
        }
        subjects
            .iter()
            .map(|subject| match found.remove(subject.as_str()).flatten() {
                Some(key) => Ok(key),
                None => Err(Error::SubjectErased {
                    subject: subject.clone(),
                }),
            })
            .collect()
    }

    async fn for_reading(&self, subjects: &[Subject]) -> Result<Found> {
        let mut keys: Found = subjects.iter().map(|subject| (subject.clone(), None)).collect();
        // In chunks: a statement takes a bounded number of parameters (SQLite 32,766).
        for chunk in subjects.chunks(READ_CHUNK) {
            let sql = format!(
                "SELECT subject, key FROM annals_subject_keys WHERE subject IN ({})",
                placeholders(1, chunk.len())
            );
            for row in self.db.query(&sql, subject_params(chunk)).await? {
                let subject = Subject::new(row.get::<String>(0)?)?;
                keys.insert(subject, key_of(row.get(1)?)?);
            }
        }
        Ok(keys)
    }

    async fn subjects_of(&self, stream: &StreamId) -> Result<Vec<Subject>> {
        let rows = self
            .db
            .query(
                "SELECT subject FROM annals_subject_streams WHERE stream_id = $1 ORDER BY subject",
                vec![stream.as_str().into()],
            )
            .await?;
        rows.iter().map(|row| Subject::new(row.get::<String>(0)?)).collect()
    }

    async fn note(&self, pairs: &[(StreamId, Subject)]) -> Result<()> {
        let rows: Vec<[Param; 2]> = pairs
            .iter()
            .map(|(stream, subject)| [stream.as_str().into(), subject.as_str().into()])
            .collect();
        self.db
            .transaction(move |tx| {
                Box::pin(async move {
                    tx.execute_many(
                        "INSERT INTO annals_subject_streams (stream_id, subject) VALUES ($1, $2) \
                         ON CONFLICT (stream_id, subject) DO NOTHING",
                        &rows,
                    )
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    async fn erase(&self, subject: &Subject, at_us: i64) -> Result<(bool, u64)> {
        let subject = subject.clone();
        self.db
            .transaction(move |tx| {
                Box::pin(async move {
                    lock_seq(tx).await?;
                    let had_key = tx
                        .query_opt(
                            "SELECT 1 FROM annals_subject_keys WHERE subject = $1 AND key IS NOT NULL",
                            &[subject.as_str().into()],
                        )
                        .await?
                        .is_some();
                    tx.execute(
                        &format!(
                            "INSERT INTO annals_subject_keys (subject, key, seq, erased_at) VALUES ($1, NULL, {NEXT_SEQ}, $2) \
                             ON CONFLICT (subject) DO UPDATE SET key = NULL, seq = excluded.seq, erased_at = excluded.erased_at \
                             WHERE annals_subject_keys.key IS NOT NULL"
                        ),
                        &[subject.as_str().into(), at_us.into()],
                    )
                    .await?;
                    let streams: i64 = tx
                        .query_one(
                            "SELECT count(*) FROM annals_subject_streams WHERE subject = $1",
                            &[subject.as_str().into()],
                        )
                        .await?
                        .get(0)?;
                    Ok((had_key, streams as u64))
                })
            })
            .await
    }

    async fn since(&self, seq: u64, limit: usize) -> Result<Vec<SubjectKey>> {
        let rows = self
            .db
            .query(
                "SELECT seq, subject, key FROM annals_subject_keys WHERE seq > $1 ORDER BY seq LIMIT $2",
                vec![(seq as i64).into(), (limit as i64).into()],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(SubjectKey {
                    seq: row.get(0)?,
                    subject: Subject::new(row.get::<String>(1)?)?,
                    key: key_of(row.get(2)?)?,
                })
            })
            .collect()
    }

    async fn import(&self, changes: &[SubjectKey], at_us: i64) -> Result<u64> {
        let changes = changes.to_vec();
        self.db
            .transaction(move |tx| {
                Box::pin(async move {
                    let mut erased = 0;
                    for change in &changes {
                        let key: Option<Vec<u8>> = change.key.as_ref().map(|key| key.as_bytes().to_vec());
                        let erasing = key.is_none();
                        let changed = tx
                            .execute(
                                "INSERT INTO annals_subject_keys (subject, key, seq, erased_at) VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT (subject) DO UPDATE SET key = excluded.key, seq = excluded.seq, \
                                 erased_at = excluded.erased_at WHERE annals_subject_keys.key IS NOT NULL",
                                &[
                                    change.subject.as_str().into(),
                                    key.into(),
                                    (change.seq as i64).into(),
                                    erasing.then_some(at_us).into(),
                                ],
                            )
                            .await?;
                        erased += u64::from(erasing && changed > 0);
                    }
                    Ok(erased)
                })
            })
            .await
    }
}

/// Keys in memory, for `memory:` stores.
#[derive(Default)]
struct MemoryKeys {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    keys: HashMap<Subject, (u64, Option<Key>)>,
    streams: HashMap<StreamId, BTreeSet<Subject>>,
    seq: u64,
}

impl MemoryState {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

impl MemoryKeys {
    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Keys for MemoryKeys {
    async fn for_writing(&self, subjects: &[Subject], stream: &StreamId) -> Result<Vec<Key>> {
        let fresh: Vec<Key> = subjects.iter().map(|_| Key::generate()).collect::<Result<_>>()?;
        let mut state = self.state();
        if let Some(subject) = subjects.iter().find(|s| matches!(state.keys.get(*s), Some((_, None)))) {
            return Err(Error::SubjectErased {
                subject: subject.clone(),
            });
        }
        let mut keys = Vec::with_capacity(subjects.len());
        for (subject, fresh) in subjects.iter().zip(fresh) {
            let key = match state.keys.get(subject) {
                Some((_, key)) => key.clone(),
                None => {
                    let seq = state.next_seq();
                    state.keys.insert(subject.clone(), (seq, Some(fresh.clone())));
                    Some(fresh)
                }
            };
            let key = key.ok_or_else(|| Error::SubjectErased {
                subject: subject.clone(),
            })?;
            state.streams.entry(stream.clone()).or_default().insert(subject.clone());
            keys.push(key);
        }
        Ok(keys)
    }

    async fn for_reading(&self, subjects: &[Subject]) -> Result<Found> {
        let state = self.state();
        Ok(subjects
            .iter()
            .map(|subject| {
                (
                    subject.clone(),
                    state.keys.get(subject).and_then(|(_, key)| key.clone()),
                )
            })
            .collect())
    }

    async fn subjects_of(&self, stream: &StreamId) -> Result<Vec<Subject>> {
        Ok(self
            .state()
            .streams
            .get(stream)
            .map(|subjects| subjects.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn note(&self, pairs: &[(StreamId, Subject)]) -> Result<()> {
        let mut state = self.state();
        for (stream, subject) in pairs {
            state.streams.entry(stream.clone()).or_default().insert(subject.clone());
        }
        Ok(())
    }

    async fn erase(&self, subject: &Subject, _at_us: i64) -> Result<(bool, u64)> {
        let mut state = self.state();
        let had_key = state.keys.get(subject).is_some_and(|(_, key)| key.is_some());
        if !matches!(state.keys.get(subject), Some((_, None))) {
            let seq = state.next_seq();
            state.keys.insert(subject.clone(), (seq, None));
        }
        let streams = state
            .streams
            .values()
            .filter(|subjects| subjects.contains(subject))
            .count();
        Ok((had_key, streams as u64))
    }

    async fn since(&self, seq: u64, limit: usize) -> Result<Vec<SubjectKey>> {
        let state = self.state();
        let mut changes: Vec<SubjectKey> = state
            .keys
            .iter()
            .filter(|(_, (at, _))| *at > seq)
            .map(|(subject, (seq, key))| SubjectKey {
                seq: *seq,
                subject: subject.clone(),
                key: key.clone(),
            })
            .collect();
        changes.sort_by_key(|change| change.seq);
        changes.truncate(limit);
        Ok(changes)
    }

    async fn import(&self, changes: &[SubjectKey], _at_us: i64) -> Result<u64> {
        let mut state = self.state();
        let mut erased = 0;
        for change in changes {
            if matches!(state.keys.get(&change.subject), Some((_, None))) {
                continue;
            }
            erased += u64::from(change.key.is_none());
            state.seq = state.seq.max(change.seq);
            state
                .keys
                .insert(change.subject.clone(), (change.seq, change.key.clone()));
        }
        Ok(erased)
    }
}

/// The keys a process wrote with lately, so that an append of a known subject to a
/// stream known to hold it asks the key store nothing. Entries live for a short while
/// (`StoreOptions::key_cache_ttl`): an erasure made in another process is refused here
/// once they expire, and what this process writes meanwhile is sealed under a key that
/// no longer exists anywhere, so it reads as erased at once. An erasure made or copied
/// in this process drops its subject at once.
pub(crate) struct WriteCache {
    ttl: std::time::Duration,
    entries: Mutex<WriteEntries>,
}

struct WriteEntries {
    /// Bumped by every erasure: keys asked for before one are not kept after it.
    generation: u64,
    keys: lru::LruCache<Subject, (Key, std::time::Instant)>,
    streams: lru::LruCache<(Subject, StreamId), ()>,
}

/// Subjects, and subject–stream pairs, a cache holds at most.
const WRITE_CACHE_ENTRIES: usize = 10_000;

impl WriteCache {
    pub(crate) fn new(ttl: std::time::Duration) -> WriteCache {
        let capacity = std::num::NonZeroUsize::new(WRITE_CACHE_ENTRIES).unwrap_or(std::num::NonZeroUsize::MIN);
        WriteCache {
            ttl,
            entries: Mutex::new(WriteEntries {
                generation: 0,
                keys: lru::LruCache::new(capacity),
                streams: lru::LruCache::new(capacity),
            }),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, WriteEntries> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The keys of `subjects` for sealing fields of `stream`, if the cache holds them all
    /// fresh and knows the stream holds them.
    pub(crate) fn get(&self, subjects: &[Subject], stream: &StreamId) -> Option<Vec<Key>> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut entries = self.entries();
        let mut keys = Vec::with_capacity(subjects.len());
        for subject in subjects {
            let (key, at) = entries.keys.get(subject)?;
            if at.elapsed() > self.ttl {
                return None;
            }
            keys.push(key.clone());
            entries.streams.get(&(subject.clone(), stream.clone()))?;
        }
        Some(keys)
    }

    /// The current generation, to hand to [`put`](WriteCache::put) with keys asked for
    /// after it was read.
    pub(crate) fn generation(&self) -> u64 {
        self.entries().generation
    }

    /// Remembers keys the key store gave for sealing fields of `stream`, unless an
    /// erasure came since `generation` was read (one of them may be its key).
    pub(crate) fn put(&self, generation: u64, subjects: &[Subject], stream: &StreamId, keys: &[Key]) {
        if self.ttl.is_zero() {
            return;
        }
        let now = std::time::Instant::now();
        let mut entries = self.entries();
        if entries.generation != generation {
            return;
        }
        for (subject, key) in subjects.iter().zip(keys) {
            entries.keys.put(subject.clone(), (key.clone(), now));
            entries.streams.put((subject.clone(), stream.clone()), ());
        }
    }

    /// Forgets `subject`'s key (it was erased), and keys asked for before now.
    pub(crate) fn forget(&self, subject: &Subject) {
        let mut entries = self.entries();
        entries.generation += 1;
        entries.keys.pop(subject);
    }
}
