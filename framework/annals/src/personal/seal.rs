//! Sealing fields and revealing them: AES-256-GCM from `aws-lc-rs` (the crypto library
//! the store's TLS already runs on), a random 96-bit nonce per field, the subject's id as
//! associated data so that a sealed field cannot pass for another subject's.

use std::collections::HashMap;

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{Subject, ERASED_KEY, SEALED_KEY};
use crate::error::{Error, Result};

/// The length of a subject's key: AES-256.
const KEY_LEN: usize = 32;

/// A subject's secret key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

impl Key {
    /// A fresh random key.
    pub(crate) fn generate() -> Result<Key> {
        let mut bytes = [0; KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| crypto_failed("drawing a random key"))?;
        Ok(Key(bytes))
    }

    /// A key as the key table stores it; `None` if it is not a key's length.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Key> {
        bytes.try_into().ok().map(Key)
    }

    /// The key's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn cipher(&self) -> Result<RandomizedNonceKey> {
        RandomizedNonceKey::new(&AES_256_GCM, &self.0).map_err(|_| crypto_failed("loading a key"))
    }
}

fn crypto_failed(what: &'static str) -> Error {
    Error::Crypto { what }
}

/// Whether a payload's JSON text may hold a sealed field: a cheap test that every read
/// makes before parsing anything.
pub(crate) fn holds_sealed(text: &str) -> bool {
    text.contains("\"annals.sealed\"")
}

/// `value` sealed under `subject`'s `key`: the envelope that replaces it in the payload.
pub(crate) fn seal(subject: &Subject, key: &Key, value: &Value) -> Result<Value> {
    let mut text = serde_json::to_vec(value).map_err(Error::InvalidJson)?;
    let nonce = key
        .cipher()?
        .seal_in_place_append_tag(Aad::from(subject.as_str().as_bytes()), &mut text)
        .map_err(|_| crypto_failed("sealing a field"))?;
    Ok(json!({
        SEALED_KEY: {
            "subject": subject,
            "nonce": BASE64.encode(nonce.as_ref()),
            "ciphertext": BASE64.encode(&text),
        }
    }))
}

/// The marker an erased field reads as.
pub(crate) fn erased(subject: &Subject) -> Value {
    json!({ ERASED_KEY: { "subject": subject } })
}

/// A sealed field's envelope, parsed.
struct Envelope {
    subject: Subject,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

/// The envelope `value` is, if it is one: an object whose only key is
/// `"annals.sealed"`, holding a subject, a nonce and a ciphertext.
fn envelope(value: &Value) -> Option<Envelope> {
    let object = value.as_object().filter(|object| object.len() == 1)?;
    let sealed = object.get(SEALED_KEY)?.as_object()?;
    let text = |key: &str| sealed.get(key).and_then(Value::as_str);
    Some(Envelope {
        subject: Subject::new(text("subject")?).ok()?,
        nonce: BASE64.decode(text("nonce")?).ok()?.try_into().ok()?,
        ciphertext: BASE64.decode(text("ciphertext")?).ok()?,
    })
}

/// Adds the subjects of the envelopes in `value` (outermost ones only: an envelope's
/// content is known once it is opened) to `subjects`.
pub(crate) fn subjects_in(value: &Value, subjects: &mut Vec<Subject>) {
    if let Some(envelope) = envelope(value) {
        if !subjects.contains(&envelope.subject) {
            subjects.push(envelope.subject);
        }
        return;
    }
    match value {
        Value::Object(object) => object.values().for_each(|value| subjects_in(value, subjects)),
        Value::Array(items) => items.iter().for_each(|value| subjects_in(value, subjects)),
        _ => {}
    }
}

/// What the store knows of subjects' keys while revealing: a key ready to open, or
/// `None` when the subject was erased (or never had a key here).
pub(crate) type Keyring = HashMap<Subject, Option<Opener>>;

/// A key loaded into the cipher, once per subject and read.
pub(crate) struct Opener(RandomizedNonceKey);

impl Opener {
    pub(crate) fn new(key: &Key) -> Result<Opener> {
        key.cipher().map(Opener)
    }
}

/// Opens the envelopes in `value` whose subjects `keys` knows, in place: each becomes its
/// value, or the erased marker when the key is gone (or does not open it). An opened
/// value may hold envelopes of its own (a snapshot sealed under several subjects); the
/// subjects of those that `keys` does not know yet are added to `wanted`, and the
/// caller looks again once it has them.
pub(crate) fn reveal(value: &mut Value, keys: &Keyring, wanted: &mut Vec<Subject>) {
    if let Some(envelope) = envelope(value) {
        let Some(key) = keys.get(&envelope.subject) else {
            if !wanted.contains(&envelope.subject) {
                wanted.push(envelope.subject);
            }
            return;
        };
        *value = match key.as_ref().and_then(|key| open(&envelope, key)) {
            Some(mut opened) => {
                reveal(&mut opened, keys, wanted);
                opened
            }
            None => erased(&envelope.subject),
        };
        return;
    }
    match value {
        Value::Object(object) => object.values_mut().for_each(|value| reveal(value, keys, wanted)),
        Value::Array(items) => items.iter_mut().for_each(|value| reveal(value, keys, wanted)),
        _ => {}
    }
}

/// The value `envelope` seals, if `key` opens it.
fn open(envelope: &Envelope, key: &Opener) -> Option<Value> {
    let mut text = envelope.ciphertext.clone();
    let nonce = Nonce::assume_unique_for_key(envelope.nonce);
    let aad = Aad::from(envelope.subject.as_str().as_bytes());
    match key.0.open_in_place(nonce, aad, &mut text) {
        Ok(plain) => serde_json::from_slice(plain).ok(),
        Err(_) => {
            tracing::warn!(subject = %envelope.subject, "a sealed field does not open with its subject's key: it reads as erased");
            None
        }
    }
}

/// Checks that `data` names fields `payload` has: at least one, none of them the whole
/// payload.
pub(crate) fn check_fields(payload: &Value, data: &super::PersonalData) -> Result<()> {
    let invalid = |reason: String| Err(Error::InvalidPersonalData { reason });
    if data.fields.is_empty() {
        return invalid(format!("no fields are marked as {}'s", data.subject));
    }
    for pointer in &data.fields {
        if pointer.is_empty() {
            return invalid("a personal field cannot be the whole payload (\"\")".into());
        }
        if payload.pointer(pointer).is_none() {
            return invalid(format!("the payload has no field at {pointer:?}"));
        }
    }
    Ok(())
}

/// Checks that no field of one subject is, or holds, or lies inside, a field of another
/// subject in the same event: each sealed field must open with one subject's key alone.
pub(crate) fn check_disjoint(marked: &[super::PersonalData]) -> Result<()> {
    let within = |inner: &str, outer: &str| inner == outer || inner.starts_with(&format!("{outer}/"));
    for (i, a) in marked.iter().enumerate() {
        for b in marked.iter().skip(i + 1).filter(|b| b.subject != a.subject) {
            for (x, y) in a.fields.iter().flat_map(|x| b.fields.iter().map(move |y| (x, y))) {
                if within(x, y) || within(y, x) {
                    return Err(Error::InvalidPersonalData {
                        reason: format!("{x:?} of {} and {y:?} of {} overlap", a.subject, b.subject),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Seals the fields `pointers` name in `payload` under `subject`'s `key` (checked with
/// [`check_fields`]); a field inside another is sealed first.
pub(crate) fn seal_fields(payload: &mut Value, pointers: &[String], subject: &Subject, key: &Key) -> Result<()> {
    let mut ordered: Vec<&String> = pointers.iter().collect();
    // Deeper fields first, so that a field inside another is sealed before it.
    ordered.sort_by_key(|pointer| std::cmp::Reverse(pointer.matches('/').count()));
    ordered.dedup();
    for pointer in ordered {
        let field = payload.pointer_mut(pointer).ok_or_else(|| Error::InvalidPersonalData {
            reason: format!("the payload has no field at {pointer:?}"),
        })?;
        *field = seal(subject, key, field)?;
    }
    Ok(())
}

/// The payload's own keys that the store keeps for itself, if it holds one.
pub(crate) fn holds_reserved_key(value: &Value) -> bool {
    match value {
        Value::Object(object) => object.contains_key(SEALED_KEY) || object.values().any(holds_reserved_key),
        Value::Array(items) => items.iter().any(holds_reserved_key),
        _ => false,
    }
}

/// Serde for an optional key as base64 text.
pub(crate) mod base64_key {
    use super::{Key, BASE64};
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(key: &Option<Key>, serializer: S) -> Result<S::Ok, S::Error> {
        match key {
            Some(key) => serializer.serialize_str(&BASE64.encode(key.as_bytes())),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Key>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        let bytes = BASE64.decode(text).map_err(serde::de::Error::custom)?;
        Key::from_bytes(&bytes)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("a key is 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object with one key.
    fn one(key: &str, value: Value) -> Value {
        Value::Object([(key.to_owned(), value)].into_iter().collect())
    }

    fn subject(id: &str) -> Subject {
        Subject::new(id).expect("subject")
    }

    #[test]
    fn a_sealed_field_opens_with_its_key_only() {
        let (ada, bob) = (subject("customer-1"), subject("customer-2"));
        let (key, other) = (Key::generate().expect("key"), Key::generate().expect("key"));
        let mut payload = json!({"email": "ada@example.com", "lines": [{"to": "Ada Lovelace"}], "total": 3});
        seal_fields(&mut payload, &["/email".into(), "/lines/0/to".into()], &ada, &key).expect("sealed");
        let text = payload.to_string();
        assert!(holds_sealed(&text) && !text.contains("ada@example.com") && !text.contains("Lovelace"));
        assert_eq!(payload["total"], 3);

        let mut subjects = Vec::new();
        subjects_in(&payload, &mut subjects);
        assert_eq!(subjects, std::slice::from_ref(&ada));

        let mut revealed = payload.clone();
        let mut wanted = Vec::new();
        reveal(
            &mut revealed,
            &Keyring::from([(ada.clone(), Some(Opener::new(&key).expect("opener")))]),
            &mut wanted,
        );
        assert!(wanted.is_empty());
        assert_eq!(
            revealed,
            json!({"email": "ada@example.com", "lines": [{"to": "Ada Lovelace"}], "total": 3})
        );

        // The wrong key, or the right key under another subject's name, opens nothing.
        let mut wrong = payload.clone();
        reveal(
            &mut wrong,
            &Keyring::from([(ada.clone(), Some(Opener::new(&other).expect("opener")))]),
            &mut wanted,
        );
        assert_eq!(wrong["email"], one(ERASED_KEY, json!({"subject": "customer-1"})));
        let mut renamed: Value = serde_json::from_str(&text.replace("customer-1", "customer-2")).expect("json");
        reveal(
            &mut renamed,
            &Keyring::from([(bob, Some(Opener::new(&key).expect("opener")))]),
            &mut wanted,
        );
        assert_eq!(renamed["email"], one(ERASED_KEY, json!({"subject": "customer-2"})));

        // An erased subject's fields read as the marker; an unknown one is asked for.
        let mut erased_fields = payload.clone();
        reveal(&mut erased_fields, &Keyring::from([(ada.clone(), None)]), &mut wanted);
        assert_eq!(erased_fields["lines"][0]["to"], erased(&ada));
        let mut unknown = payload.clone();
        reveal(&mut unknown, &Keyring::new(), &mut wanted);
        assert_eq!((unknown, wanted), (payload, vec![ada]));
    }

    #[test]
    fn layered_envelopes_open_one_subject_at_a_time() {
        let (ada, bob) = (subject("a"), subject("b"));
        let (ka, kb) = (Key::generate().expect("key"), Key::generate().expect("key"));
        let state = json!({"name": "Ada"});
        let sealed = seal(&bob, &kb, &seal(&ada, &ka, &state).expect("inner")).expect("outer");
        let mut keys = Keyring::from([(bob.clone(), Some(Opener::new(&kb).expect("opener")))]);
        let (mut value, mut wanted) = (sealed.clone(), Vec::new());
        reveal(&mut value, &keys, &mut wanted);
        assert_eq!(wanted, std::slice::from_ref(&ada));
        keys.insert(ada.clone(), Some(Opener::new(&ka).expect("opener")));
        reveal(&mut value, &keys, &mut Vec::new());
        assert_eq!(value, state);
        keys.insert(ada.clone(), None);
        let mut value = sealed;
        reveal(&mut value, &keys, &mut Vec::new());
        assert_eq!(value, erased(&ada));
    }

    #[test]
    fn bad_pointers_and_reserved_keys_are_refused() {
        let payload = json!({"email": "x"});
        let data = |fields: &[&str]| super::super::PersonalData {
            subject: subject("a"),
            fields: fields.iter().map(|field| field.to_string()).collect(),
        };
        for fields in [&[""][..], &["/name"], &["email"], &[], &["/email", "/phone"]] {
            let error = check_fields(&payload, &data(fields)).expect_err("refused");
            assert!(matches!(error, Error::InvalidPersonalData { .. }), "{error}");
        }
        check_fields(&payload, &data(&["/email"])).expect("a field the payload has");
        assert!(holds_reserved_key(&json!({"a": [{"annals.sealed": 1}]})));
        assert!(!holds_reserved_key(&json!({"a": "annals.sealed"})));
    }
}
