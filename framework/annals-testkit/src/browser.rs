//! Web pages in headless Chromium: load a page, let its scripts run, read the DOM
//! ([`render`]); or drive a page as a user does, over the DevTools protocol ([`Page`]).
//!
//! Needs Debian's `chromium` (the test command installs it). Without one, tests skip
//! (they get `None`), unless `ANNALS_REQUIRE_CHROMIUM=1`, which makes that a failure.

use std::process::Command;

/// The Chromium binary on `PATH`, if any.
pub fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|binary| {
            Command::new(binary)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if found.is_none() {
        assert!(
            std::env::var("ANNALS_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "ANNALS_REQUIRE_CHROMIUM=1 but no chromium on PATH"
        );
        eprintln!("skipped: no chromium on PATH");
    }
    found
}

/// The DOM of `url` once its scripts have run (up to ten seconds of virtual time), in
/// a throwaway profile.
pub fn render(browser: &str, url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let output = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=10000", "--dump-dom", url])
        .output()
        .expect("run chromium");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A page in a headless Chromium driven over the DevTools protocol, for tests that act
/// as a user does: click, type, and read what the page then shows.
pub struct Page {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    session: String,
    next_id: u64,
    chromium: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Page {
    /// Starts `browser` headless and opens `url` in a new page.
    pub async fn open(browser: &str, url: &str) -> Page {
        use tokio::io::AsyncBufReadExt;

        let profile = tempfile::tempdir().expect("profile dir");
        let mut chromium = tokio::process::Command::new(browser)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--remote-debugging-port=0", "about:blank"])
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        let mut lines = tokio::io::BufReader::new(chromium.stderr.take().expect("stderr")).lines();
        let endpoint = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.expect("chromium's stderr") {
                if let Some(endpoint) = line.strip_prefix("DevTools listening on ") {
                    return endpoint.trim().to_owned();
                }
            }
            panic!("chromium ended without a DevTools endpoint");
        })
        .await
        .expect("chromium's DevTools endpoint");
        // Keep reading its stderr, so that chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("DevTools socket");
        let mut page = Page {
            socket,
            session: String::new(),
            next_id: 0,
            chromium,
            _profile: profile,
        };
        let target = page
            .call("Target.createTarget", serde_json::json!({"url": "about:blank"}))
            .await;
        let target = target["targetId"].as_str().expect("target id").to_owned();
        let attached = page
            .call(
                "Target.attachToTarget",
                serde_json::json!({"targetId": target, "flatten": true}),
            )
            .await;
        page.session = attached["sessionId"].as_str().expect("session id").to_owned();
        page.call("Page.enable", serde_json::json!({})).await;
        page.goto(url).await;
        page
    }

    /// Sends one DevTools command and waits for its answer.
    pub async fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;

        self.next_id += 1;
        let id = self.next_id;
        let mut command = serde_json::json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            command["sessionId"] = self.session.clone().into();
        }
        self.socket
            .send(Message::text(command.to_string()))
            .await
            .expect("DevTools send");
        loop {
            // A page that stops answering fails the test rather than hanging it.
            let message = tokio::time::timeout(std::time::Duration::from_secs(30), self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("{method} had no answer in 30 s"))
                .expect("DevTools socket open")
                .expect("DevTools message");
            let Message::Text(text) = message else { continue };
            let answer: serde_json::Value = serde_json::from_str(&text).expect("DevTools JSON");
            if answer["id"] == id {
                assert!(answer.get("error").is_none(), "{method} failed: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// Loads `url` in the page.
    pub async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", serde_json::json!({"url": url})).await;
        self.wait_for("document.readyState === 'complete'", "the page to load")
            .await;
    }

    /// The value of the JavaScript expression `js` in the page (awaited when it is a
    /// promise); panics with the exception it threw.
    pub async fn eval(&mut self, js: &str) -> serde_json::Value {
        let answer = self
            .call(
                "Runtime.evaluate",
                serde_json::json!({"expression": js, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        assert!(
            answer.get("exceptionDetails").is_none(),
            "{js} threw: {}",
            answer["exceptionDetails"]
        );
        answer["result"]["value"].clone()
    }

    /// Waits up to ten seconds for the JavaScript expression `js` to be truthy in the
    /// page; panics naming `what` otherwise, with the page's body.
    pub async fn wait_for(&mut self, js: &str, what: &str) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let value = self.eval(&format!("Boolean({js})")).await;
            if value == serde_json::Value::Bool(true) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let body = self.eval("document.body ? document.body.innerHTML : ''").await;
                panic!("waited 10 s for {what} ({js}):\n{}", body.as_str().unwrap_or_default());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element `selector` names (which must exist).
    pub async fn click(&mut self, selector: &str) {
        let js = format!(
            "(() => {{ const e = document.querySelector({selector:?}); if (!e) throw new Error('no ' + {selector:?}); e.click(); return true; }})()"
        );
        self.eval(&js).await;
    }

    /// The text of the element `selector` names, or `None`.
    pub async fn text(&mut self, selector: &str) -> Option<String> {
        let js =
            format!("(() => {{ const e = document.querySelector({selector:?}); return e ? e.textContent : null; }})()");
        self.eval(&js).await.as_str().map(str::to_owned)
    }

    /// Saves what the page shows, `width` × `height` CSS pixels of it, as a PNG at `path`.
    pub async fn screenshot(&mut self, path: &std::path::Path, width: u32, height: u32) {
        use base64::Engine as _;

        let metrics = serde_json::json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false});
        self.call("Emulation.setDeviceMetricsOverride", metrics).await;
        let shot = self
            .call("Page.captureScreenshot", serde_json::json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64");
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Ends the browser.
    pub async fn close(mut self) {
        let _ = self.chromium.kill().await;
    }
}
