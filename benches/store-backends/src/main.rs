//! fjall against RocksDB on the deletions processor's state: `<documents>` patient documents
//! (~280 B values under ~40 B keys) and two index entries each (empty values), written in atomic
//! batches of 1,000 documents as a restore or a commit flushes them; then point reads of random
//! documents, prefix scans of the index, a clean close and a reopen. Prints time, the process's
//! peak RSS after each engine and its disk use. One engine per process run
//! (`-- fjall|rocksdb <documents>`); without an engine, runs both in child processes.

use std::path::Path;
use std::time::Instant;

const BATCH: usize = 1_000;

fn key(i: u64) -> String {
    format!(r#"{{"$oid":"{i:024x}"}}"#)
}

fn value(i: u64) -> Vec<u8> {
    let mut value = format!(
        r#"{{"userId":"{:010x}","clinicId":"{:024x}","fullName":"Patient {i}","birthDate":"1990-01-01","mrn":"{i:08}","email":"patient{i}@example.org","permissions":{{"view":{{}},"upload":{{}}}},"tags":[]}}"#,
        i % 5_000_000,
        i % 1_000
    )
    .into_bytes();
    value.resize(280, b' ');
    value
}

fn index_keys(i: u64) -> [String; 2] {
    [
        format!("u{:010x}|{}", i % 5_000_000, key(i)),
        format!("c{:024x}|{}", i % 1_000, key(i)),
    ]
}

/// Peak resident memory (VmHWM) of this process, MiB.
fn peak_rss() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn disk(path: &Path) -> f64 {
    fn walk(path: &Path) -> u64 {
        std::fs::read_dir(path).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
    }
    walk(path) as f64 / 1_048_576.0
}

/// What each engine is asked.
trait Engine {
    fn write(&mut self, batch: &[(String, Vec<u8>)], index: &[String]);
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn scan(&self, prefix: &str) -> usize;
}

struct Fjall {
    db: fjall::Database,
    documents: fjall::Keyspace,
    index: fjall::Keyspace,
}

impl Fjall {
    fn open(path: &Path) -> Self {
        // As the runtime opens it (src/streams/disk.rs): a 32 MiB cache, 8 MiB memtables.
        let db = fjall::Database::builder(path)
            .cache_size(32 << 20)
            .open()
            .expect("fjall opens");
        let options = || fjall::KeyspaceCreateOptions::default().max_memtable_size(8 << 20);
        let documents = db.keyspace("documents", options).expect("keyspace");
        let index = db.keyspace("index", options).expect("keyspace");
        Self {
            db,
            documents,
            index,
        }
    }
}

impl Engine for Fjall {
    fn write(&mut self, batch: &[(String, Vec<u8>)], index: &[String]) {
        let mut writes = self.db.batch();
        for (key, value) in batch {
            writes.insert(&self.documents, key.as_bytes(), value.as_slice());
        }
        for key in index {
            writes.insert(&self.index, key.as_bytes(), b"");
        }
        writes.commit().expect("batch");
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.documents.get(key).expect("get").map(|v| v.to_vec())
    }

    fn scan(&self, prefix: &str) -> usize {
        self.index.prefix(prefix).count()
    }
}

struct Rocks {
    db: rocksdb::DB,
}

impl Rocks {
    fn open(path: &Path) -> Self {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let mut table = rocksdb::BlockBasedOptions::default();
        // Kafka Streams' default block cache is 50 MiB per instance; alike here.
        table.set_block_cache(&rocksdb::Cache::new_lru_cache(50 << 20));
        options.set_block_based_table_factory(&table);
        let db = rocksdb::DB::open_cf(&options, path, ["documents", "index"]).expect("rocksdb opens");
        Self { db }
    }
}

impl Engine for Rocks {
    fn write(&mut self, batch: &[(String, Vec<u8>)], index: &[String]) {
        let documents = self.db.cf_handle("documents").expect("cf");
        let idx = self.db.cf_handle("index").expect("cf");
        let mut writes = rocksdb::WriteBatch::default();
        for (key, value) in batch {
            writes.put_cf(&documents, key, value);
        }
        for key in index {
            writes.put_cf(&idx, key, b"");
        }
        self.db.write(writes).expect("batch");
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let documents = self.db.cf_handle("documents").expect("cf");
        self.db.get_cf(&documents, key).expect("get")
    }

    fn scan(&self, prefix: &str) -> usize {
        let idx = self.db.cf_handle("index").expect("cf");
        self.db
            .prefix_iterator_cf(&idx, prefix)
            .map(|item| item.expect("item"))
            .take_while(|(k, _)| k.starts_with(prefix.as_bytes()))
            .count()
    }
}

fn run(name: &str, documents: u64) {
    let dir = std::env::temp_dir().join(format!("store-backends-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let open = |dir: &Path| -> Box<dyn Engine> {
        match name {
            "fjall" => Box::new(Fjall::open(dir)),
            "rocksdb" => Box::new(Rocks::open(dir)),
            other => panic!("no engine {other}"),
        }
    };
    let mut engine = open(&dir);
    let started = Instant::now();
    let mut i = 0;
    while i < documents {
        let end = (i + BATCH as u64).min(documents);
        let batch: Vec<(String, Vec<u8>)> = (i..end).map(|n| (key(n), value(n))).collect();
        let index: Vec<String> = (i..end).flat_map(index_keys).collect();
        engine.write(&batch, &index);
        i = end;
    }
    let load = started.elapsed();
    let started = Instant::now();
    let mut found = 0;
    let mut state = 12345u64;
    for _ in 0..100_000 {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        found += usize::from(engine.get(&key(state % documents)).is_some());
    }
    assert_eq!(found, 100_000);
    let gets = started.elapsed();
    let started = Instant::now();
    let mut scanned = 0;
    for user in 0..10_000u64 {
        scanned += engine.scan(&format!("u{:010x}|", user * 397 % 5_000_000));
    }
    let scans = started.elapsed();
    drop(engine);
    let started = Instant::now();
    let engine = open(&dir);
    assert!(engine.get(&key(documents - 1)).is_some());
    let reopen = started.elapsed();
    println!(
        "{name:<8} {documents} documents: load {:.1} s ({:.0} documents/s), 100,000 gets {:.2} s ({:.1} µs each), 10,000 index scans {:.2} s ({scanned} entries), reopen {:.2} s, peak RSS {:.0} MiB, disk {:.0} MiB",
        load.as_secs_f64(),
        documents as f64 / load.as_secs_f64(),
        gets.as_secs_f64(),
        gets.as_secs_f64() * 10.0,
        scans.as_secs_f64(),
        reopen.as_secs_f64(),
        peak_rss(),
        disk(&dir)
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [engine, documents] => run(engine, documents.parse().expect("a number")),
        [documents] => {
            for engine in ["fjall", "rocksdb"] {
                let status = std::process::Command::new(std::env::current_exe().expect("self"))
                    .args([engine, documents])
                    .status()
                    .expect("runs");
                assert!(status.success());
            }
        }
        _ => {
            let status = std::process::Command::new(std::env::current_exe().expect("self"))
                .arg("1000000")
                .status()
                .expect("runs");
            assert!(status.success());
        }
    }
}
