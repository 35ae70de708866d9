//! Personal data in the store (see [`personal`](crate::personal)): appends seal marked
//! fields before any engine sees them, reads reveal them, snapshots of streams that
//! hold them are sealed too, and erasing a subject deletes its key.

use serde_json::value::RawValue;
use serde_json::Value;

use super::{AppendRequest, Store};
use crate::error::{Error, Result};
use crate::log::{StoredSnapshot, Visitor};
use crate::personal::{holds_sealed, seal, Erasure, Subject, SubjectKey, ERASURES_STREAM, SUBJECT_ERASED};
use crate::position::{ExpectedVersion, Version};
use crate::record::{NewEvent, RecordedEvent};
use crate::stream::StreamId;

/// Records a fold reads per page once it meets sealed fields.
const FOLD_PAGE: usize = 1_000;

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn to_raw(value: &Value) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(value).map_err(Error::InvalidJson)
}

impl Store {
    /// Seals the fields `request`'s events mark as personal data, under their subjects'
    /// keys (created on first use). Refuses a payload that holds the store's own
    /// `"annals.sealed"` key, marked fields the payload lacks, and personal data of an
    /// erased subject; all of it is checked before any key is created.
    pub(super) async fn seal(&self, request: &mut AppendRequest) -> Result<()> {
        let mut subjects: Vec<Subject> = Vec::new();
        let mut payloads: Vec<Option<Value>> = Vec::with_capacity(request.events.len());
        for event in &request.events {
            let text = event.payload.get();
            let payload = if holds_sealed(text) || !event.personal.is_empty() {
                let parsed: Value = serde_json::from_str(text).map_err(Error::InvalidJson)?;
                // Checked parsed: the text may spell the key with escapes (`annals\u002esealed`).
                if seal::holds_reserved_key(&parsed) {
                    return Err(Error::InvalidPersonalData {
                        reason: "the payload holds the key \"annals.sealed\", which the store keeps for sealed fields"
                            .into(),
                    });
                }
                Some(parsed)
            } else {
                None
            };
            seal::check_disjoint(&event.personal)?;
            for data in &event.personal {
                seal::check_fields(payload.as_ref().unwrap_or(&Value::Null), data)?;
                if !subjects.contains(&data.subject) {
                    subjects.push(data.subject.clone());
                }
            }
            payloads.push(payload);
        }
        if subjects.is_empty() {
            return Ok(());
        }
        let keys = match self.inner.write_keys.get(&subjects, &request.stream) {
            Some(keys) => keys,
            None => {
                let generation = self.inner.write_keys.generation();
                let keys = self.inner.keys.for_writing(&subjects, &request.stream).await?;
                self.inner.write_keys.put(generation, &subjects, &request.stream, &keys);
                keys
            }
        };
        for (event, payload) in request.events.iter_mut().zip(payloads) {
            let Some(mut payload) = payload.filter(|_| !event.personal.is_empty()) else {
                continue;
            };
            for data in std::mem::take(&mut event.personal) {
                let index = subjects.iter().position(|subject| *subject == data.subject);
                let key = index
                    .map(|index| &keys[index])
                    .ok_or(Error::Crypto { what: "finding a key" })?;
                seal::seal_fields(&mut payload, &data.fields, &data.subject, key)?;
            }
            event.payload = to_raw(&payload)?;
        }
        Ok(())
    }

    /// Reveals the sealed fields of `records` in place, asking the key store once for
    /// the subjects of them all.
    pub(crate) async fn reveal(&self, records: &mut [RecordedEvent]) -> Result<()> {
        let mut sealed: Vec<(&mut RecordedEvent, Value)> = Vec::new();
        for record in records.iter_mut() {
            if holds_sealed(record.payload.get()) {
                let payload = serde_json::from_str(record.payload.get()).map_err(Error::InvalidJson)?;
                sealed.push((record, payload));
            }
        }
        if sealed.is_empty() {
            return Ok(());
        }
        let mut values: Vec<&mut Value> = sealed.iter_mut().map(|(_, payload)| payload).collect();
        self.reveal_values(&mut values).await?;
        for (record, payload) in sealed {
            record.payload = to_raw(&payload)?;
        }
        Ok(())
    }

    /// Opens the envelopes in `values`, asking the key store for the subjects it meets
    /// (again for envelopes found inside opened ones).
    async fn reveal_values(&self, values: &mut [&mut Value]) -> Result<()> {
        let mut wanted = Vec::new();
        for value in values.iter() {
            seal::subjects_in(value, &mut wanted);
        }
        let mut keys = seal::Keyring::new();
        while !wanted.is_empty() {
            for (subject, key) in self.inner.keys.for_reading(&wanted).await? {
                keys.insert(subject, key.as_ref().map(seal::Opener::new).transpose()?);
            }
            wanted.clear();
            for value in values.iter_mut() {
                seal::reveal(value, &keys, &mut wanted);
            }
        }
        Ok(())
    }

    /// [`fold_stream`](crate::EventStore::fold_stream) with sealed fields revealed: the
    /// engine's fold shows events in place until the first that holds one, and the rest
    /// is read as records, revealed, in pages.
    pub(super) async fn fold_revealed(
        &self,
        stream: &StreamId,
        from_version: Version,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        let mut sealed_from = None;
        self.inner
            .backend
            .fold_stream(stream, from_version, &mut |event| {
                if sealed_from.is_none() && holds_sealed(event.payload) {
                    sealed_from = Some(event.version);
                }
                match sealed_from {
                    Some(_) => Ok(()),
                    None => visit(event),
                }
            })
            .await?;
        let Some(mut next) = sealed_from else { return Ok(()) };
        loop {
            let mut records = self.inner.backend.read_stream(stream, next, FOLD_PAGE).await?;
            let full = records.len() == FOLD_PAGE;
            if let Some(last) = records.last() {
                next = last.version + 1;
            }
            records.retain(|record| !record.redacted);
            self.reveal(&mut records).await?;
            for record in &records {
                record.view(&mut *visit)?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// `state`, a snapshot of `stream`, sealed under the keys of the subjects whose
    /// fields the stream holds (one envelope inside another); `None` when one of them
    /// was erased, in which case the snapshot is not written: the state may hold what
    /// the erasure removed, and loads fold the stream instead.
    pub(crate) async fn seal_snapshot(&self, stream: &StreamId, state: &str) -> Result<Option<String>> {
        let subjects = self.inner.keys.subjects_of(stream).await?;
        if subjects.is_empty() {
            return Ok(Some(state.to_owned()));
        }
        let keys = self.inner.keys.for_reading(&subjects).await?;
        let mut value: Value = serde_json::from_str(state).map_err(Error::InvalidJson)?;
        for subject in &subjects {
            let Some(Some(key)) = keys.get(subject) else {
                return Ok(None);
            };
            value = seal::seal(subject, key, &value)?;
        }
        Ok(Some(value.to_string()))
    }

    /// `snapshot` with its state revealed; `None` when a key it was sealed under is
    /// gone (the stream is folded from its events instead).
    pub(crate) async fn reveal_snapshot(&self, mut snapshot: StoredSnapshot) -> Result<Option<StoredSnapshot>> {
        if !holds_sealed(&snapshot.state) {
            return Ok(Some(snapshot));
        }
        let mut state: Value = serde_json::from_str(&snapshot.state).map_err(Error::InvalidJson)?;
        self.reveal_values(&mut [&mut state]).await?;
        if state.get(crate::personal::ERASED_KEY).is_some() {
            return Ok(None);
        }
        snapshot.state = state.to_string();
        Ok(Some(snapshot))
    }

    /// The newest snapshot of `stream` (of `schema_version` if given, see
    /// `SnapshotLog::newest`), revealed.
    pub(crate) async fn newest_snapshot(
        &self,
        stream: &StreamId,
        schema_version: Option<u32>,
    ) -> Result<Option<StoredSnapshot>> {
        match self.snapshot_log().newest(stream, schema_version).await? {
            Some(snapshot) => self.reveal_snapshot(snapshot).await,
            None => Ok(None),
        }
    }

    /// Erases `subject`: deletes its key, after which every field sealed under it reads
    /// as erased on every read of this store, of its followers once they copied the
    /// erasure, and of any backup of the log taken before (the key is not in the log).
    /// Its data can never be written again ([`Error::SubjectErased`]). Then appends
    /// [`SUBJECT_ERASED`] to [`ERASURES_STREAM`], for consumers that keep personal data
    /// in read models. Erasing a subject twice, or one the store never saw, succeeds.
    ///
    /// On SQLite the key's bytes are overwritten in the database and its WAL; on
    /// PostgreSQL they stay in old row versions and the WAL until vacuum and recycling
    /// (keep keys in a database of their own: [`StoreOptions::keys`](crate::StoreOptions::keys)).
    pub async fn erase_subject(&self, subject: &Subject) -> Result<Erasure> {
        if let Some(leader) = self.replica().leader {
            return Err(Error::ReadOnlyReplica { leader });
        }
        self.inner.write_keys.forget(subject);
        let (had_key, streams) = self.inner.keys.erase(subject, now_us()).await?;
        // Again: an append that asked the key store before the erasure may have cached
        // the key since.
        self.inner.write_keys.forget(subject);
        self.reclaim_keys().await?;
        let record = NewEvent::json(SUBJECT_ERASED, &serde_json::json!({ "subject": subject }))?;
        let stream = StreamId::new(ERASURES_STREAM)?;
        let outcome = self
            .append_own(AppendRequest::new(stream, ExpectedVersion::Any).event(record))
            .await?;
        crate::telemetry::subject_erased();
        Ok(Erasure {
            subject: subject.clone(),
            had_key,
            streams,
            outcome,
        })
    }

    /// The key table's changes after `seq` (every key created and every erasure, in the
    /// order they were made), at most `limit`: what a follower copies from its leader.
    /// They are secrets: whoever holds them reads the subjects' data for as long as they
    /// keep them.
    pub async fn keys_since(&self, seq: u64, limit: usize) -> Result<Vec<SubjectKey>> {
        self.inner.keys.since(seq, limit).await
    }

    /// Takes key changes copied from the leader ([`keys_since`](Store::keys_since)):
    /// keys this store lacks, and erasures, which delete keys here too. A subject erased
    /// here stays erased. Returns how many subjects this erased.
    pub async fn import_keys(&self, changes: &[SubjectKey]) -> Result<u64> {
        if changes.is_empty() {
            return Ok(0);
        }
        for change in changes.iter().filter(|change| change.key.is_none()) {
            self.inner.write_keys.forget(&change.subject);
        }
        let erased = self.inner.keys.import(changes, now_us()).await?;
        if erased > 0 {
            self.reclaim_keys().await?;
        }
        Ok(erased)
    }

    /// Remembers which streams of `records`, copied from a leader, hold which subjects'
    /// fields, as the appends that wrote them did there.
    pub(super) async fn note_sealed(&self, records: &[RecordedEvent]) -> Result<()> {
        let mut pairs = std::collections::BTreeSet::new();
        for record in records.iter().filter(|record| holds_sealed(record.payload.get())) {
            let payload: Value = serde_json::from_str(record.payload.get()).map_err(Error::InvalidJson)?;
            let mut subjects = Vec::new();
            seal::subjects_in(&payload, &mut subjects);
            pairs.extend(subjects.into_iter().map(|subject| (record.stream.clone(), subject)));
        }
        if pairs.is_empty() {
            return Ok(());
        }
        self.inner.keys.note(&pairs.into_iter().collect::<Vec<_>>()).await
    }

    /// Overwrites what an erasure freed in the key store's files, where its engine can.
    async fn reclaim_keys(&self) -> Result<()> {
        match &self.inner.keys_home {
            Some(home) => home.inner.backend.reclaim().await,
            None => self.inner.backend.reclaim().await,
        }
    }
}
