//! The end-to-end tests, one module per behaviour, in one test binary: 29 binaries that
//! each linked the whole workspace took most of the test build (docs/testing.md). The
//! tests that stop a shared service (`broker_restart`, `clickhouse_outage`) keep their own
//! binaries, which cargo runs one after another, so nothing else runs while it is down.

mod any_table;
mod api;
mod bad_input;
mod cluster;
mod compose;
mod convert;
mod creative_packs;
mod faults;
mod fuzz_api;
mod game_rounds;
mod group_fit;
mod hostile_bodies;
mod jobs_outlive_requests;
mod k8s;
mod lineage;
mod model_cli;
mod object_storage;
mod object_stores;
mod pipeline;
mod query_jobs;
mod real_table;
mod retries;
mod rounds_exactly_once;
mod rounds_redelivery;
mod safe_defaults;
mod scale;
mod schema_registry;
mod schema_upgrade;
mod stocks;
mod torn_files;
mod two_hosts;
mod upload_retries;
