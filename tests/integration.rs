//! Integration tests on real processes: appends acknowledged before a SIGKILL survive
//! it, and writers in several processes keep every partition gapless.

mod crash;
mod processes;
mod support;
