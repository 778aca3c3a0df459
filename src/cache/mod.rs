//! The cache of blobs and manifests pulled by digest (`cache:`), a feature with three
//! hooks (see `crate::hooks` for the shape):
//!
//! - `admit` (admission's `Cache` step, after the token check): answer a pull by digest from
//!   the cache when the edge granted pull and the registry confirmed the pair, or from the
//!   one registry fetch of a cold digest.
//! - `upstream_response`: what the registry's answer teaches the cache (confirm or forget
//!   a pair, start a manifest by tag's fill).
//! - `response_body`: a manifest by tag's body into its fill.
//!
//! Its per-request state is `RequestState` (`RequestCtx::cache`). Content is addressed by
//! its SHA-256, so one entry serves every repository that holds it; who may be answered from
//! it is decided per request (`request`): the edge granted pull on the repository, and the
//! registry confirmed that this repository holds this digest (`confirmed`).
//!
//! - `request`: the admission hook and the per-request state; `response`: the hooks on the
//!   registry's answer (confirm, learn an endpoint's type, fill; by tag too).
//! - `answer`: writing an answer from an entry as the registry would answer on the endpoint
//!   asked (`conditional` decides the status and part, with `range`).
//! - `shared`: the `Cache` every request shares.
//! - `entry`: an entry's size and its content type per endpoint (`Kind`: blob, manifest).
//! - `store`: the entries on disk (the `cacache` crate: content-addressed files checked
//!   against their SHA-256 when written and while read) and the in-memory index (size,
//!   content type, least recently used first) rebuilt from the folder at start.
//! - `fill`: one registry fetch per cold digest, at the registry's pace, written to a file
//!   every client asking is answered from as it grows (`growing`), finished from the
//!   registry should the fetch fail (`resume`); `commit`: a file whose
//!   SHA-256 matched becomes an entry (the fetch's, a manifest by tag's); `fetch`: a
//!   fetch as its readers see it (stage, bytes written, the last ones in memory:
//!   `window`), and the fetches running.
//! - `confirmed`: the repository+digest pairs the registry answered 200 for.
//! - `tags`: remembered tags (a route's `stale_if_error`), and `stale`: answering them
//!   while the route's pool fails.
//! - `read`: an entry's file read for an answer: verified once, then trusted while its
//!   `fstat` identity (device, inode, size, mtime, ctime) is unchanged.
//! - `memory`: small hot objects (manifests, configs) also kept in memory.
//! - `disk`: the folder, digests, opening content; `purge`: `registry-edge cache purge`.
//!
//! A full disk or an I/O error stops caching (logged once, counted) and every request goes
//! to the registry as before.

mod answer;
mod commit;
mod conditional;
mod confirmed;
mod disk;
mod entry;
mod fetch;
mod fill;
mod growing;
mod memory;
mod purge;
mod range;
mod read;
mod request;
mod response;
mod resume;
mod shared;
mod stale;
mod store;
pub(crate) mod tags;
mod window;

pub use disk::CacheError;
pub use purge::{purge, Purged};
pub(crate) use request::{admit, RequestState};
pub(crate) use response::{response_body, upstream_response};
pub(crate) use shared::Cache;
pub(crate) use stale::{answer as answer_stale, replaces as stale_replaces};
