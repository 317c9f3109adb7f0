//! Unit tests of every verb, on the fake driver and an in-memory store.

mod support;

mod carry;
mod create;
mod cut_off;
mod delete;
mod egress;
mod exec;
mod files;
mod keys_audit;
mod listing;
mod pool;
mod quota;
mod recover;
mod secrets;
mod service;
mod snapshot_build;
mod snapshots;
mod start_stop;
mod stream;
mod sweep;
mod tier;
mod tunnel;
mod update;
mod volumes;
