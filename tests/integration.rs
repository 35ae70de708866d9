//! Integration tests on real processes: appends acknowledged before a SIGKILL survive
//! it, writers in several processes keep every partition gapless, consumer-group
//! members in several processes build a read model exactly while they are killed and
//! added, and aggregate caches in several processes never decide on stale state.

mod caches;
mod crash;
mod groups;
mod processes;
mod support;
