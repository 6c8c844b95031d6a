//! Metric names of the streams runtime (one place, per the house style). Labels are bounded:
//! topic, partition, error class, store.

/// Records consumed (`topic`).
pub const RECORDS_IN: &str = "clinic_streams_records_in_total";
/// Records produced to output topics (`topic`).
pub const RECORDS_OUT: &str = "clinic_streams_records_out_total";
/// Errors (`class`: poison, transient, fatal).
pub const ERRORS: &str = "clinic_streams_errors_total";
/// Records sent to the DLQ.
pub const DLQ: &str = "clinic_streams_dlq_records_total";
/// Commits done.
pub const COMMITS: &str = "clinic_streams_commits_total";
/// Commit latency, seconds.
pub const COMMIT_LATENCY: &str = "clinic_streams_commit_latency_seconds";
/// Time to handle one record (decode, process, produce), seconds.
pub const PROCESS_LATENCY: &str = "clinic_streams_process_latency_seconds";
/// Consumer lag per assigned partition (`topic`, `partition`).
pub const LAG: &str = "clinic_streams_consumer_lag_records";
/// Entries per store (`store`).
pub const STORE_ENTRIES: &str = "clinic_streams_store_entries";
/// Changelog records applied while restoring.
pub const RESTORED: &str = "clinic_streams_restored_records_total";
/// 1 while a dependency answers, 0 during an outage (`dependency`: broker, registry).
pub const DEPENDENCY_UP: &str = "clinic_streams_dependency_up";
/// Outages begun (`dependency`).
pub const OUTAGES: &str = "clinic_streams_outages_total";
/// Times the runner aborted its transaction and rewound to the last commit (`cause`: commit,
/// stall).
pub const REWINDS: &str = "clinic_streams_rewinds_total";
/// Collection-level change events skipped (`topic`, `operation`: drop, rename, invalidate, …).
pub const IGNORED: &str = "clinic_cdc_ignored_total";
/// Effects performed (`stage`).
pub const EFFECTS_PERFORMED: &str = "clinic_effects_performed_total";
/// Effect attempts failed (`stage`, `class`: transient, permanent).
pub const EFFECTS_FAILED: &str = "clinic_effects_failed_total";
/// Requests skipped because their id was performed already (`stage`).
pub const EFFECTS_SKIPPED: &str = "clinic_effects_skipped_duplicate_total";
/// Time to perform one effect attempt, seconds (`stage`).
pub const EFFECT_LATENCY: &str = "clinic_effects_latency_seconds";
