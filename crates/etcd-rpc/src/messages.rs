//! The etcd v3 messages this crate sends and reads, declared with prost's derive.
//!
//! Each struct mirrors a message of etcd's `api/etcdserverpb/rpc.proto`, `api/mvccpb/kv.proto` or
//! `server/etcdserver/api/v3lock/v3lockpb/v3lock.proto`, field for field, with the same tags. The
//! v3 API only ever adds fields, and protobuf skips fields a reader does not know, so these stay
//! wire-compatible with every etcd from 3.4 on; the tests in `tests/etcd.rs` run them against a
//! real etcd. Fields are `ID`/`TTL` in the `.proto` files and `id`/`ttl` here: protobuf encodes
//! tags, not names.

/// Which member answered, and at which revision of the store.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    /// The cluster's id.
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    /// The answering member's id.
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    /// The store's revision when the request was applied.
    #[prost(int64, tag = "3")]
    pub revision: i64,
    /// The raft term of the answering member.
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

/// One key and its metadata.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// The key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The revision of the key's last creation.
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    /// The revision of the key's last modification.
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    /// How many times the key was written since its creation.
    #[prost(int64, tag = "4")]
    pub version: i64,
    /// The value.
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    /// The lease the key is attached to; 0 for none.
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

/// A change of one key, as a watch reports it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Put or delete ([`EventType`]).
    #[prost(enumeration = "EventType", tag = "1")]
    pub r#type: i32,
    /// The key after the change (for a delete: only the key and the revision).
    #[prost(message, optional, tag = "2")]
    pub kv: Option<KeyValue>,
    /// The key before the change, when the watch asked for it.
    #[prost(message, optional, tag = "3")]
    pub prev_kv: Option<KeyValue>,
}

/// The kind of an [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EventType {
    /// A key was created or changed.
    Put = 0,
    /// A key was deleted (also when its lease ran out or was revoked).
    Delete = 1,
}

/// Reads a key or a range of keys.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    /// The first key of the range.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The end of the range, exclusive; empty for `key` alone ([`prefix_end`](crate::prefix_end)
    /// for every key starting with `key`).
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    /// At most this many keys; 0 for no limit.
    #[prost(int64, tag = "3")]
    pub limit: i64,
    /// Read at this revision; 0 for the newest.
    #[prost(int64, tag = "4")]
    pub revision: i64,
    /// [`SortOrder`].
    #[prost(enumeration = "SortOrder", tag = "5")]
    pub sort_order: i32,
    /// [`SortTarget`].
    #[prost(enumeration = "SortTarget", tag = "6")]
    pub sort_target: i32,
    /// Read from the answering member without a quorum round (may be stale).
    #[prost(bool, tag = "7")]
    pub serializable: bool,
    /// Only keys, no values.
    #[prost(bool, tag = "8")]
    pub keys_only: bool,
    /// Only the count.
    #[prost(bool, tag = "9")]
    pub count_only: bool,
    /// Only keys modified at or after this revision; 0 for no bound.
    #[prost(int64, tag = "10")]
    pub min_mod_revision: i64,
    /// Only keys modified at or before this revision; 0 for no bound.
    #[prost(int64, tag = "11")]
    pub max_mod_revision: i64,
    /// Only keys created at or after this revision; 0 for no bound.
    #[prost(int64, tag = "12")]
    pub min_create_revision: i64,
    /// Only keys created at or before this revision; 0 for no bound.
    #[prost(int64, tag = "13")]
    pub max_create_revision: i64,
}

/// The order of a range's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SortOrder {
    /// Unsorted (by key, in practice).
    None = 0,
    /// Smallest first.
    Ascend = 1,
    /// Largest first.
    Descend = 2,
}

/// What a range is sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SortTarget {
    /// The key.
    Key = 0,
    /// The key's version.
    Version = 1,
    /// The create revision.
    Create = 2,
    /// The mod revision.
    Mod = 3,
    /// The value.
    Value = 4,
}

/// The keys of a range.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    /// Where and when it was read.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// The keys found (none with `count_only`).
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    /// Whether the limit left keys out.
    #[prost(bool, tag = "3")]
    pub more: bool,
    /// How many keys the range holds.
    #[prost(int64, tag = "4")]
    pub count: i64,
}

/// Writes one key.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    /// The key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The value.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    /// Attach the key to this lease (it goes when the lease goes); 0 for none.
    #[prost(int64, tag = "3")]
    pub lease: i64,
    /// Answer with the key as it was before.
    #[prost(bool, tag = "4")]
    pub prev_kv: bool,
    /// Keep the current value.
    #[prost(bool, tag = "5")]
    pub ignore_value: bool,
    /// Keep the current lease.
    #[prost(bool, tag = "6")]
    pub ignore_lease: bool,
}

/// The answer to a put.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    /// The header; its revision is the put's.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// The key before the put, when asked for.
    #[prost(message, optional, tag = "2")]
    pub prev_kv: Option<KeyValue>,
}

/// Deletes a key or a range of keys.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteRangeRequest {
    /// The key, or the first key of the range.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The end of the range (exclusive); empty for the one key.
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    /// Answer with the deleted keys.
    #[prost(bool, tag = "3")]
    pub prev_kv: bool,
}

/// The answer to a delete.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteRangeResponse {
    /// The header; its revision is the delete's.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// How many keys were deleted.
    #[prost(int64, tag = "2")]
    pub deleted: i64,
    /// The deleted keys, when asked for.
    #[prost(message, repeated, tag = "3")]
    pub prev_kvs: Vec<KeyValue>,
}

/// One condition of a transaction: a field of one key compared with a value.
///
/// In the `.proto` the compared value is a `oneof` (`target_union`); on the wire a `oneof` member
/// is an ordinary field that is present, so it is declared here as the one optional field this
/// crate needs, which prost writes even when it is 0.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Compare {
    /// How to compare ([`CompareResult`]).
    #[prost(enumeration = "CompareResult", tag = "1")]
    pub result: i32,
    /// Which field of the key ([`CompareTarget`]).
    #[prost(enumeration = "CompareTarget", tag = "2")]
    pub target: i32,
    /// The key.
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    /// The create revision to compare with (0: the key does not exist).
    #[prost(int64, optional, tag = "5")]
    pub create_revision: Option<i64>,
}

/// How a [`Compare`] compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CompareResult {
    /// Equal.
    Equal = 0,
    /// Greater.
    Greater = 1,
    /// Less.
    Less = 2,
    /// Not equal.
    NotEqual = 3,
}

/// Which field of a key a [`Compare`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CompareTarget {
    /// Its version.
    Version = 0,
    /// Its create revision.
    Create = 1,
    /// Its mod revision.
    Mod = 2,
    /// Its value.
    Value = 3,
    /// Its lease.
    Lease = 4,
}

/// One operation of a transaction; like [`Compare`]'s value, a `oneof` in the `.proto`, of which
/// this crate sends puts and deletes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestOp {
    /// A put.
    #[prost(message, optional, tag = "2")]
    pub request_put: Option<PutRequest>,
    /// A delete.
    #[prost(message, optional, tag = "3")]
    pub request_delete_range: Option<DeleteRangeRequest>,
}

/// Compares, then does `success` if every comparison holds and `failure` otherwise, atomically.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnRequest {
    /// The conditions.
    #[prost(message, repeated, tag = "1")]
    pub compare: Vec<Compare>,
    /// What to do when they hold.
    #[prost(message, repeated, tag = "2")]
    pub success: Vec<RequestOp>,
    /// What to do when one does not.
    #[prost(message, repeated, tag = "3")]
    pub failure: Vec<RequestOp>,
}

/// The answer to a transaction (the operations' own answers are not read here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnResponse {
    /// The header; its revision is the transaction's.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// Whether every comparison held, so `success` was done.
    #[prost(bool, tag = "2")]
    pub succeeded: bool,
}

/// Asks for a lease.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantRequest {
    /// Seconds the lease lives without a keep-alive.
    #[prost(int64, tag = "1")]
    pub ttl: i64,
    /// The id wanted; 0 lets etcd choose.
    #[prost(int64, tag = "2")]
    pub id: i64,
}

/// A granted lease.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantResponse {
    /// The header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// The lease's id.
    #[prost(int64, tag = "2")]
    pub id: i64,
    /// The ttl etcd chose, in seconds (at least etcd's minimum).
    #[prost(int64, tag = "3")]
    pub ttl: i64,
    /// Why the grant failed, if it did.
    #[prost(string, tag = "4")]
    pub error: String,
}

/// Ends a lease and deletes its keys.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRevokeRequest {
    /// The lease.
    #[prost(int64, tag = "1")]
    pub id: i64,
}

/// The answer to a revoke.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRevokeResponse {
    /// The header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

/// Renews a lease, on the keep-alive stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseKeepAliveRequest {
    /// The lease.
    #[prost(int64, tag = "1")]
    pub id: i64,
}

/// The answer to one keep-alive.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseKeepAliveResponse {
    /// The header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// The lease.
    #[prost(int64, tag = "2")]
    pub id: i64,
    /// Seconds the lease now lives; 0 or less when it no longer exists.
    #[prost(int64, tag = "3")]
    pub ttl: i64,
}

/// Asks how long a lease has left.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseTimeToLiveRequest {
    /// The lease.
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// Also list the lease's keys.
    #[prost(bool, tag = "2")]
    pub keys: bool,
}

/// How long a lease has left.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseTimeToLiveResponse {
    /// The header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// The lease.
    #[prost(int64, tag = "2")]
    pub id: i64,
    /// Seconds left; -1 when the lease does not exist.
    #[prost(int64, tag = "3")]
    pub ttl: i64,
    /// The ttl it was granted with.
    #[prost(int64, tag = "4")]
    pub granted_ttl: i64,
    /// Its keys, when asked for.
    #[prost(bytes = "vec", repeated, tag = "5")]
    pub keys: Vec<Vec<u8>>,
}

/// A message on the watch stream: create a watch, cancel one, or ask for progress.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchRequest {
    /// The request.
    #[prost(oneof = "WatchRequestUnion", tags = "1, 2, 3")]
    pub request_union: Option<WatchRequestUnion>,
}

/// The kinds of [`WatchRequest`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum WatchRequestUnion {
    /// Start a watch.
    #[prost(message, tag = "1")]
    CreateRequest(WatchCreateRequest),
    /// Stop a watch.
    #[prost(message, tag = "2")]
    CancelRequest(WatchCancelRequest),
    /// Ask every watch of the stream for a progress notification (etcd 3.4 and later).
    #[prost(message, tag = "3")]
    ProgressRequest(WatchProgressRequest),
}

/// Starts watching a key or a range.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchCreateRequest {
    /// The first key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The end of the range, exclusive; empty for `key` alone.
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    /// The first revision to report; 0 for "from now".
    #[prost(int64, tag = "3")]
    pub start_revision: i64,
    /// Send empty progress notifications when nothing changes for a while.
    #[prost(bool, tag = "4")]
    pub progress_notify: bool,
    /// Kinds of events to leave out ([`WatchFilterType`]).
    #[prost(enumeration = "WatchFilterType", repeated, tag = "5")]
    pub filters: Vec<i32>,
    /// Report each key as it was before the change too.
    #[prost(bool, tag = "6")]
    pub prev_kv: bool,
    /// The watch id wanted; 0 lets etcd choose.
    #[prost(int64, tag = "7")]
    pub watch_id: i64,
    /// Allow large answers to be split into fragments.
    #[prost(bool, tag = "8")]
    pub fragment: bool,
}

/// Events a watch can leave out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum WatchFilterType {
    /// Leave out puts.
    NoPut = 0,
    /// Leave out deletes.
    NoDelete = 1,
}

/// Stops a watch.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchCancelRequest {
    /// The watch.
    #[prost(int64, tag = "1")]
    pub watch_id: i64,
}

/// Asks for a progress notification.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchProgressRequest {}

/// A message from the watch stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchResponse {
    /// The header; with no events, its revision says how far the watch has come.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// The watch this message is for.
    #[prost(int64, tag = "2")]
    pub watch_id: i64,
    /// The answer to a create request.
    #[prost(bool, tag = "3")]
    pub created: bool,
    /// The watch ended (see `cancel_reason` and `compact_revision`).
    #[prost(bool, tag = "4")]
    pub canceled: bool,
    /// When the start revision was compacted away: the oldest revision still kept. The watch
    /// is cancelled.
    #[prost(int64, tag = "5")]
    pub compact_revision: i64,
    /// Why the watch was cancelled.
    #[prost(string, tag = "6")]
    pub cancel_reason: String,
    /// More of the same answer follows.
    #[prost(bool, tag = "7")]
    pub fragment: bool,
    /// The changes, in revision order.
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<Event>,
}

/// Waits for and takes a named lock of etcd's v3lock service.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LockRequest {
    /// The lock's name.
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    /// The session lease; the lock goes when it goes.
    #[prost(int64, tag = "2")]
    pub lease: i64,
}

/// A taken v3lock.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LockResponse {
    /// The header; its revision is the acquisition's.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// The key that holds the lock; give it to unlock.
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
}

/// Releases a v3lock.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UnlockRequest {
    /// The key [`LockResponse`] gave.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
}

/// The answer to an unlock.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UnlockResponse {
    /// The header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// The bytes follow from the tags in etcd's rpc.proto: (tag << 3 | wire type), then the
    /// payload. A wrong tag or type here would change them.
    #[test]
    fn a_range_request_encodes_with_rpc_proto_tags() {
        let request = RangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            limit: 1,
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Create as i32,
            keys_only: true,
            max_create_revision: 300,
            ..Default::default()
        };
        assert_eq!(
            request.encode_to_vec(),
            [
                0x0a, 1, b'a', // 1: key
                0x12, 1, b'b', // 2: range_end
                0x18, 1, // 3: limit
                0x28, 2, // 5: sort_order DESCEND
                0x30, 2, // 6: sort_target CREATE
                0x40, 1, // 8: keys_only
                0x68, 0xac, 0x02, // 13: max_create_revision 300 as a varint
            ]
        );
    }

    #[test]
    fn a_watch_response_decodes_events_from_tag_11() {
        let bytes = [
            0x20, 1, // 4: canceled
            0x28, 7, // 5: compact_revision
            0x5a, 7, // 11: events, 7 bytes
            0x08, 1, // Event 1: type DELETE
            0x12, 3, // Event 2: kv, 3 bytes
            0x0a, 1, b'k', // KeyValue 1: key
        ];
        let response = WatchResponse::decode(&bytes[..]).unwrap();
        assert!(response.canceled);
        assert_eq!(response.compact_revision, 7);
        assert_eq!(response.events.len(), 1);
        assert_eq!(response.events[0].r#type(), EventType::Delete);
        assert_eq!(response.events[0].kv.as_ref().unwrap().key, b"k");
    }
}
