//! PostgreSQL over TLS (rustls): `sslmode` and `sslrootcert` in the store URL, read as
//! libpq reads them. The test cluster (`scripts/postgres.sh`) serves a certificate for
//! `localhost` from a certificate authority of its own, whose certificate is at
//! `ANNALS_TEST_POSTGRES_CA` (default `/var/lib/postgresql/annals-tls/ca.crt`).

use annals::{AppendRequest, Error, ExpectedVersion, NewEvent, Store, StreamId};
use annals_testkit::postgres::{fresh_schema_url, required};

const CA_VAR: &str = "ANNALS_TEST_POSTGRES_CA";
const DEFAULT_CA: &str = "/var/lib/postgresql/annals-tls/ca.crt";

/// The test authority's certificate, or `None` (skip) when there is none and
/// PostgreSQL is not required.
fn ca() -> Option<String> {
    let path = std::env::var(CA_VAR).unwrap_or_else(|_| DEFAULT_CA.to_owned());
    if std::path::Path::new(&path).exists() {
        return Some(path);
    }
    assert!(
        !required(),
        "PostgreSQL is required but its TLS authority {path} is missing ({CA_VAR})"
    );
    None
}

/// A fresh schema's URL, reached as `host`, with `params` added.
async fn url(host: &str, params: &str) -> Option<String> {
    let base = fresh_schema_url().await?;
    let (before, after) = base.split_once('@').expect("credentials in the test URL");
    let (_, after_host) = after.split_once(':').expect("a port in the test URL");
    Some(format!("{before}@{host}:{after_host}&{params}"))
}

/// Whether the store's connections are encrypted, as the server sees it.
async fn encrypted(store: &Store) -> bool {
    let db = store.read_models().expect("sql");
    let rows = db
        .query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", Vec::new())
        .await
        .expect("pg_stat_ssl");
    rows[0].get(0).expect("ssl")
}

async fn works(store: &Store) {
    let id = StreamId::new("order-1").expect("id");
    let request = AppendRequest::new(id.clone(), ExpectedVersion::NoStream)
        .event(NewEvent::json("Placed", &serde_json::json!({})).expect("event"));
    store.append(request).await.expect("append over TLS");
    assert_eq!(store.read_stream(&id, 1, 10).await.expect("read").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_encrypts_without_checking_the_certificate() {
    let Some(url) = url("127.0.0.1", "sslmode=require").await else {
        return;
    };
    let store = Store::open(&url).await.expect("open with sslmode=require");
    assert!(encrypted(&store).await, "sslmode=require connected in clear");
    works(&store).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_authority_and_the_host_name() {
    let Some(ca) = ca() else { return };
    let Some(url_ok) = url("localhost", &format!("sslmode=verify-full&sslrootcert={ca}")).await else {
        return;
    };
    let store = Store::open(&url_ok).await.expect("open with verify-full");
    assert!(encrypted(&store).await);
    works(&store).await;
    store.close().await;

    // The certificate names localhost, not 127.0.0.1.
    let wrong_host = url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}"))
        .await
        .expect("url");
    let refused = Store::open(&wrong_host).await;
    assert!(
        matches!(&refused, Err(Error::Engine { .. })),
        "verify-full accepted a certificate for another name: {:?}",
        refused.as_ref().map(|_| ())
    );
    // Without the authority, the server's certificate is trusted by nothing.
    let unknown_ca = url("localhost", "sslmode=verify-full").await.expect("url");
    assert!(
        Store::open(&unknown_ca).await.is_err(),
        "verify-full trusted an unknown authority"
    );
    // verify-ca checks the authority. It should not check the name, but sqlx 0.8 with
    // rustls checks it anyway (sqlx#3793, fixed in sqlx 0.9): pinned here so that the
    // upgrade that fixes it shows, and the book says so.
    let verify_ca = url("localhost", &format!("sslmode=verify-ca&sslrootcert={ca}"))
        .await
        .expect("url");
    let store = Store::open(&verify_ca).await.expect("open with verify-ca");
    assert!(encrypted(&store).await);
    store.close().await;
    let verify_ca_by_address = url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"))
        .await
        .expect("url");
    assert!(
        Store::open(&verify_ca_by_address).await.is_err(),
        "verify-ca no longer checks the host name: update backends/postgresql.md"
    );
    let verify_ca_unknown = url("localhost", "sslmode=verify-ca").await.expect("url");
    assert!(
        Store::open(&verify_ca_unknown).await.is_err(),
        "verify-ca trusted an unknown authority"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_stays_in_clear() {
    let Some(url) = url("127.0.0.1", "sslmode=disable").await else {
        return;
    };
    let store = Store::open(&url).await.expect("open with sslmode=disable");
    assert!(!encrypted(&store).await);
    store.close().await;
}
