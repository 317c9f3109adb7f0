//! Unit tests of every verb, on the fake driver and an in-memory store.
