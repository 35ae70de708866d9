//! How commands print: human tables on a terminal, one JSON document with `--json`,
//! and errors as `{"error": code, "message": text}`.

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use serde::Serialize;
use serde_json::{json, Value};

/// Where a command's result goes, in the format the user chose.
pub(crate) struct Output {
    json: bool,
}

/// A failure of a command: a store error, or bad arguments caught by the command.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Store(#[from] annals::Error),
    #[error("{0}")]
    Usage(String),
    /// An error the server answered, as it answered it.
    #[error("{}", .0["message"].as_str().unwrap_or("the server refused the request"))]
    Remote(serde_json::Value),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A follower that stopped: its log diverged, its leader is stale, …
    #[error(transparent)]
    Follow(annals_server::follower::FollowError),
    /// The Kafka bridge stopped: the topic diverged, a bad message, …
    #[error(transparent)]
    Kafka(annals_kafka::Error),
}

impl From<annals::InvalidStreamId> for CliError {
    fn from(invalid: annals::InvalidStreamId) -> Self {
        CliError::Store(invalid.into())
    }
}

impl CliError {
    /// The process's exit code: 1 for most failures; `annals follow` (and `annals kafka
    /// sink`) exits with 3 when the logs diverged and 4 when the leader's epoch is below the store's, so that a
    /// supervisor can tell them apart from a crash.
    pub(crate) fn exit_code(&self) -> u8 {
        use annals_server::follower::FollowError;
        match self {
            CliError::Follow(FollowError::Diverged { .. } | FollowError::TruncationTooLarge { .. }) => 3,
            CliError::Follow(FollowError::StaleLeader { .. }) => 4,
            CliError::Kafka(annals_kafka::Error::Diverged { .. }) => 3,
            _ => 1,
        }
    }
}

pub(crate) type CliResult<T = ()> = Result<T, CliError>;

impl Output {
    pub(crate) fn new(json: bool) -> Self {
        Output { json }
    }

    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// Prints `value` as JSON, or as the text `human` renders.
    pub(crate) fn print<T: Serialize>(&self, value: &T, human: impl FnOnce(&T) -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value).expect("serialisable output"));
        } else {
            println!("{}", human(value));
        }
    }

    pub(crate) fn error(&self, error: &CliError) {
        let body = error_body(error);
        if self.json {
            println!("{body}");
        } else {
            eprintln!("error[{}]: {}", body["error"].as_str().unwrap_or("error"), error);
        }
    }
}

fn error_body(error: &CliError) -> Value {
    match error {
        CliError::Store(error) => {
            let mut body = json!({"error": error.code(), "message": error.to_string()});
            if let annals::Error::WrongExpectedVersion { expected, actual, .. } = error {
                body["expected"] = json!(expected);
                body["actual"] = json!(actual);
            }
            body
        }
        CliError::Usage(message) => json!({"error": "bad_request", "message": message}),
        CliError::Remote(body) => body.clone(),
        CliError::Database(_) | CliError::Sqlite(_) => json!({"error": "internal", "message": error.to_string()}),
        CliError::Follow(annals_server::follower::FollowError::Store(error)) => {
            json!({"error": error.code(), "message": error.to_string()})
        }
        CliError::Follow(follow) => json!({"error": follow.code(), "message": error.to_string()}),
        CliError::Kafka(kafka) => json!({"error": kafka.code(), "message": error.to_string()}),
    }
}

/// A table with a header row, in the house style.
pub(crate) fn table<const N: usize>(header: [&str; N], rows: impl IntoIterator<Item = [String; N]>) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header(header);
    for row in rows {
        table.add_row(row);
    }
    table.to_string()
}

/// `text` cut to `width` characters, with an ellipsis when cut.
pub(crate) fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut clipped: String = text.chars().take(width.saturating_sub(1)).collect();
        clipped.push('…');
        clipped
    }
}
