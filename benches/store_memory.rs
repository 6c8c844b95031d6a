//! Memory cost per entry of the in-memory state store, measured as the process's resident set
//! growth while filling a store with patient-permission-sized entries (the permissions
//! processor's typical value). Prints figures; asserts nothing.
//!
//! Run: `cargo bench --bench store_memory` (optionally `-- <entries>`, default 100000).

use std::hint::black_box;

use bson::oid::ObjectId;
use clinic::streams::store::{KeyValueStore, table_key};

/// Resident set size in bytes, from `/proc/self/statm` (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

fn main() {
    let entries: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let mut store = KeyValueStore::default();
    let before = rss_bytes();
    let mut payload_bytes = 0_usize;
    for i in 0..entries {
        let id = ObjectId::new();
        let key = table_key(&bson::Bson::ObjectId(id));
        let value = format!(
            r#"{{"userId":"{:010x}","clinicId":"{}","permissions":{{"view":{{}},"upload":{{}}}}}}"#,
            i,
            ObjectId::new().to_hex()
        )
        .into_bytes();
        payload_bytes += key.len() + value.len();
        store.apply(&key, Some(&value));
    }
    let after = rss_bytes();
    black_box(&store);
    let per_entry = (after.saturating_sub(before)) as f64 / entries as f64;
    let payload = payload_bytes as f64 / entries as f64;
    println!("store_memory: {entries} entries");
    println!("  key + value bytes per entry: {payload:.0}");
    println!(
        "  resident growth per entry:   {per_entry:.0} bytes ({:.1}x payload)",
        per_entry / payload
    );
    println!(
        "  total resident growth:       {:.1} MiB",
        (after - before) as f64 / 1_048_576.0
    );
}
