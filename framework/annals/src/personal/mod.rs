//! Personal data that can be erased from an append-only log (crypto-shredding).
//!
//! An event marks the payload fields that hold a person's data with
//! [`NewEvent::personal`](crate::NewEvent::personal): a [`Subject`] (an opaque id of the
//! person, such as `customer-7`) and the fields' JSON pointers. The store encrypts each
//! marked field before the engine sees it, with the subject's own key and an AEAD
//! (AES-256-GCM), and the log holds only the sealed form:
//!
//! ```json
//! {"email": {"annals.sealed": {"subject": "customer-7", "nonce": "…", "ciphertext": "…"}}}
//! ```
//!
//! Keys are kept apart from the log, in the store's key table (or in another database:
//! [`StoreOptions::keys`](crate::StoreOptions::keys)). Every read of the store (streams,
//! partitions, subscriptions, consumer groups, aggregate loads, the HTTP API) reveals
//! sealed fields while their subject's key exists.
//! [`Store::erase_subject`](crate::Store::erase_subject) deletes the key: from then on
//! each of the subject's fields reads as [`ERASED_KEY`]'s marker,
//! `{"annals.erased": {"subject": "customer-7"}}`, everywhere the log was copied (backups,
//! followers, exports), and nothing in the log itself changes. Typed code declares such
//! fields as [`Erasable<T>`].
//!
//! ```
//! use annals::personal::{Erasable, Subject};
//! use annals::{AppendRequest, ExpectedVersion, NewEvent, Store, StreamId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> annals::Result<()> {
//! let store = Store::open("memory:").await?;
//! let customer = Subject::new("customer-7")?;
//! let order = StreamId::new("order-1")?;
//! let payload = serde_json::json!({"email": "ada@example.com", "total": 12});
//! let placed = NewEvent::json("OrderPlaced", &payload)?.personal(customer.clone(), ["/email"]);
//! store.append(AppendRequest::new(order.clone(), ExpectedVersion::NoStream).event(placed)).await?;
//!
//! #[derive(serde::Deserialize)]
//! struct Placed { email: Erasable<String>, total: u32 }
//!
//! let read: Placed = store.read_stream(&order, 1, 1).await?[0].decode()?;
//! assert_eq!((read.email, read.total), (Erasable::Value("ada@example.com".into()), 12));
//!
//! store.erase_subject(&customer).await?;
//! let read: Placed = store.read_stream(&order, 1, 1).await?[0].decode()?;
//! assert_eq!((read.email, read.total), (Erasable::Erased(customer), 12));
//! # Ok(()) }
//! ```

mod keys;
pub(crate) mod seal;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::log::AppendOutcome;

pub(crate) use keys::{open as open_keys, Keys, WriteCache};
pub(crate) use seal::Key;

/// Whether a payload's JSON text may hold a sealed field (it holds the key
/// `"annals.sealed"`): a cheap test, made before parsing anything.
pub fn holds_sealed(payload: &str) -> bool {
    seal::holds_sealed(payload)
}

/// The key of a sealed field's envelope.
pub const SEALED_KEY: &str = "annals.sealed";

/// The key of the marker an erased field reads as: `{"annals.erased": {"subject": …}}`.
pub const ERASED_KEY: &str = "annals.erased";

/// The type of the record [`Store::erase_subject`](crate::Store::erase_subject) appends
/// to [`ERASURES_STREAM`], payload `{"subject": …}`: consumers that keep personal data
/// in read models learn from it what to forget.
pub const SUBJECT_ERASED: &str = "annals.SubjectErased";

/// The stream holding the [`SUBJECT_ERASED`] records.
pub const ERASURES_STREAM: &str = "annals.erasures";

/// The longest subject id, in bytes.
pub const MAX_SUBJECT_LEN: usize = 200;

/// Whose personal data a field holds: an opaque id of a person (`customer-7`), 1–200
/// bytes without control characters. It is stored in the clear (in sealed fields'
/// envelopes and in the key table), so it should not itself be personal data such as
/// an email address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Subject(String);

impl Subject {
    /// Validates `id` and wraps it.
    pub fn new(id: impl Into<String>) -> Result<Subject> {
        let id = id.into();
        let reason = if id.is_empty() {
            Some("it is empty")
        } else if id.len() > MAX_SUBJECT_LEN {
            Some("it is longer than 200 bytes")
        } else if id.chars().any(char::is_control) {
            Some("it holds a control character")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidSubject { subject: id, reason }),
            None => Ok(Subject(id)),
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Subject {
    type Err = Error;
    fn from_str(text: &str) -> Result<Subject> {
        Subject::new(text)
    }
}

impl<'de> Deserialize<'de> for Subject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Subject::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// The fields of one event that hold one subject's personal data, as JSON pointers
/// (`/email`, `/address/street`, `/lines/0/recipient`) into its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonalData {
    /// Whose data the fields hold.
    pub subject: Subject,
    /// The fields, each of which must exist in the payload; the payload itself (`""`)
    /// cannot be one.
    pub fields: Vec<String>,
}

/// A field of personal data as a reader decodes it: its value, or the marker it reads
/// as once its subject was erased.
///
/// It deserialises from the value (`"ada@example.com"`) or from the marker
/// (`{"annals.erased": {"subject": "customer-7"}}`), and serialises back to the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Erasable<T> {
    /// The field's value.
    Value(T),
    /// The subject's key was deleted: the value is gone for good.
    Erased(Subject),
}

impl<T> Erasable<T> {
    /// The value, if it was not erased.
    pub fn value(&self) -> Option<&T> {
        match self {
            Erasable::Value(value) => Some(value),
            Erasable::Erased(_) => None,
        }
    }

    /// The value, if it was not erased.
    pub fn into_value(self) -> Option<T> {
        match self {
            Erasable::Value(value) => Some(value),
            Erasable::Erased(_) => None,
        }
    }

    /// Whether the value was erased.
    pub fn is_erased(&self) -> bool {
        matches!(self, Erasable::Erased(_))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErasedMarker {
    #[serde(rename = "annals.erased")]
    erased: ErasedSubject,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErasedSubject {
    subject: Subject,
}

impl<T: Serialize> Serialize for Erasable<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Erasable::Value(value) => value.serialize(serializer),
            Erasable::Erased(subject) => ErasedMarker {
                erased: ErasedSubject {
                    subject: subject.clone(),
                },
            }
            .serialize(serializer),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Erasable<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form<T> {
            Erased(ErasedMarker),
            Value(T),
        }
        Ok(match Form::deserialize(deserializer)? {
            Form::Erased(marker) => Erasable::Erased(marker.erased.subject),
            Form::Value(value) => Erasable::Value(value),
        })
    }
}

/// A subject's key as one store hands it to another: what a follower copies from its
/// leader ([`Store::keys_since`](crate::Store::keys_since),
/// [`Store::import_keys`](crate::Store::import_keys)). Its JSON form is
/// `{"seq": 12, "subject": "customer-7", "key": "<base64>"}`, with `"key": null` once the
/// subject was erased.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectKey {
    /// The change's place in the key table: every key created or erased takes the next.
    pub seq: u64,
    /// The subject.
    pub subject: Subject,
    /// The key (base64 of 32 bytes), `None` once erased.
    #[serde(with = "seal::base64_key")]
    pub key: Option<Key>,
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectKey")
            .field("seq", &self.seq)
            .field("subject", &self.subject)
            .field("erased", &self.key.is_none())
            .finish()
    }
}

/// What [`Store::erase_subject`](crate::Store::erase_subject) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    /// The subject.
    pub subject: Subject,
    /// Whether the store held a key for it (false: it had no data here, or was erased
    /// before; it is marked erased all the same, so it can never be written).
    pub had_key: bool,
    /// How many streams hold sealed fields of the subject, which now read as erased.
    pub streams: u64,
    /// Where the [`SUBJECT_ERASED`] record went.
    pub outcome: AppendOutcome,
}
