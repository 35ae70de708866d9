//! Integration tests on real processes: appends acknowledged before a SIGKILL survive
//! it, writers in several processes keep every partition gapless, and consumer-group
//! members in several processes build a read model exactly while they are killed and
//! added.

mod crash;
mod groups;
mod processes;
mod support;
