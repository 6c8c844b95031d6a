//! The one typed change event every CDC input form decodes into.

use bson::{DateTime, Document, Timestamp};

/// What happened to the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// A new document (`insert`; Debezium `c`).
    Insert,
    /// Fields of an existing document changed (`update`; Debezium `u`).
    Update,
    /// The whole document was replaced (`replace`).
    Replace,
    /// The document was deleted (`delete`; Debezium `d`).
    Delete,
    /// The document as read by an initial snapshot or copy (Debezium `r`).
    Snapshot,
    /// Any other change-stream operation (`drop`, `rename`, `invalidate`, …), kept by name so a
    /// processor can count and ignore it.
    Other(String),
}

impl Operation {
    /// The MongoDB change-stream name of the operation (`insert`, `update`, …); `Snapshot` is
    /// `read`, as Debezium calls it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Replace => "replace",
            Self::Delete => "delete",
            Self::Snapshot => "read",
            Self::Other(name) => name,
        }
    }

    /// Parses a change-stream `operationType`.
    pub fn from_mongo(name: &str) -> Self {
        match name {
            "insert" => Self::Insert,
            "update" => Self::Update,
            "replace" => Self::Replace,
            "delete" => Self::Delete,
            "read" => Self::Snapshot,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// Database and collection an event comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Database name.
    pub db: String,
    /// Collection name (absent for database-level events).
    pub coll: Option<String>,
}

/// Where in the source's history the event sits, as far as the event itself says.
/// (Kafka coordinates are the runtime's business, not the event's.)
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourcePosition {
    /// The change stream's resume token (the event `_id`), when the producer carries it.
    pub resume_token: Option<Document>,
    /// The oplog time of the change (`clusterTime`; Debezium: `source.ts_ms` seconds + `ord`).
    pub cluster_time: Option<Timestamp>,
    /// Wall-clock time of the change (`wallTime`; Debezium: `source.wallTime` or `source.ts_ms`).
    pub wall_time: Option<DateTime>,
}

/// One change to one document.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// What happened.
    pub operation: Operation,
    /// Where it happened, when the producer says.
    pub namespace: Option<Namespace>,
    /// The changed document's key: `{_id: …}` (plus the shard key on sharded collections).
    pub document_key: Document,
    /// The document after the change: always on inserts and replaces; on updates the document
    /// *at lookup time* (`updateLookup`), which may be newer than the change or `None` when the
    /// document was deleted since; `None` on deletes.
    pub full_document: Option<Document>,
    /// Fields an update set, keyed by path exactly as MongoDB reports them: dotted paths such as
    /// `permissions.upload` or `rolesUpdates.3` stay single keys. Empty for other operations.
    pub updated_fields: Document,
    /// Paths an update removed (dotted, like [`ChangeEvent::updated_fields`]).
    pub removed_fields: Vec<String>,
    /// Arrays an update shortened (pipeline updates, MongoDB 5+): cut before `updated_fields`
    /// apply.
    pub truncated_arrays: Vec<TruncatedArray>,
    /// Position in the source's history.
    pub source: SourcePosition,
}

impl ChangeEvent {
    /// The document's `_id`, when the key has one.
    pub fn id(&self) -> Option<&bson::Bson> {
        self.document_key.get("_id")
    }
}

/// An array an update shortened (`updateDescription.truncatedArrays`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedArray {
    /// The array's dotted path.
    pub field: String,
    /// Its length after the update.
    pub new_size: u32,
}

/// A decoded CDC record: a change, or a tombstone (a key with no value, which Debezium writes
/// after each delete so compaction can drop the key).
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "changes are the common case; boxing them would allocate per record to shrink the rare tombstone"
)]
pub enum CdcRecord {
    /// A change event.
    Change(ChangeEvent),
    /// A tombstone for the document with this key.
    Tombstone {
        /// The deleted document's key (`{_id: …}`).
        document_key: Document,
    },
}
