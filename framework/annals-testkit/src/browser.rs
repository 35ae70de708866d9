//! Web pages in headless Chromium: load a page, let its scripts run, read the DOM.
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
