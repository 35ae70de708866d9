//! The conformance suite on every engine: memory (the reference), SQLite, PostgreSQL.

mod memory {
    annals_testkit::conformance_suite!(annals_testkit::TestStore::memory());
}

mod sqlite {
    annals_testkit::conformance_suite!(annals_testkit::TestStore::sqlite());
}

mod postgres {
    annals_testkit::conformance_suite!(annals_testkit::TestStore::postgres());
}
