//! What the server's tests share: a server on a free loopback port.

use annals::Store;
use annals_server::{ServerOptions, Spawned};

/// Serves `store` on a free loopback port with the default options.
pub(crate) async fn serve(store: Store) -> Spawned {
    Spawned::start(store, ServerOptions::default()).await.expect("serve")
}
