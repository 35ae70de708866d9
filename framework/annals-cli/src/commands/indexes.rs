//! `annals indexes`: the store's filter indexes, which groups filtered by category or
//! event type read through instead of the whole log.

use annals::group::FilterIndex;
use serde_json::json;

use crate::output::{CliError, CliResult, Output};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Indexes {
    /// Lists the filter indexes the store has.
    List,
    /// Builds a filter index (`category` or `event-type`). On SQLite appends wait while
    /// it builds; on PostgreSQL it is built concurrently with them.
    Enable {
        /// `category` or `event-type`.
        index: String,
    },
    /// Drops a filter index: groups filtered by it read the whole log again.
    Disable {
        /// `category` or `event-type`.
        index: String,
    },
}

pub(crate) async fn run(db: &str, command: Indexes, out: &Output) -> CliResult {
    let store = super::open_existing(db).await?;
    let result = async {
        match command {
            Indexes::List => {}
            Indexes::Enable { index } => store.enable_filter_index(parse(&index)?).await?,
            Indexes::Disable { index } => store.disable_filter_index(parse(&index)?).await?,
        }
        Ok::<_, CliError>(store.filter_indexes().await?)
    }
    .await;
    store.close().await;
    let enabled = result?;
    out.print(&json!({ "filter_indexes": enabled }), |_| {
        let names: Vec<&str> = enabled.iter().map(|index| index.as_str()).collect();
        if names.is_empty() {
            "filter indexes: none (filtered groups read the whole log)".to_owned()
        } else {
            format!("filter indexes: {}", names.join(", "))
        }
    });
    Ok(())
}

fn parse(name: &str) -> CliResult<FilterIndex> {
    name.parse().map_err(CliError::from)
}
