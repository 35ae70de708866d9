//! What the server's tests share: a server on a free loopback port.

use annals::Store;
use annals_server::ServerOptions;

/// Serves `store` on a free loopback port; returns its URL and what stops it.
pub(crate) async fn serve(store: Store) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(annals_server::serve(store, listener, ServerOptions::default(), async {
        let _ = stopped.await;
    }));
    (url, stop)
}
