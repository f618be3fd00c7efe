//! The bounds of the `[source]` settings: the largest and smallest values
//! the checks and the typed values of a site accept.

use std::time::Duration;

/// The largest `concurrency` accepted.
pub const MAX_CONCURRENCY: usize = 1_000_000;

/// The largest `max_buffered_records` accepted (at 2 KiB each, 20 GiB).
pub const MAX_BUFFERED_RECORDS: usize = 10_000_000;

/// The longest `delivery_timeout` accepted (librdkafka's limit is ~24.8 days).
pub const MAX_DELIVERY_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The largest `threads` accepted.
pub const MAX_THREADS: usize = 1024;

/// The largest `timeout` accepted: a check that takes longer is not a check of
/// a website any more, and shutdown (bounded by `shutdown_timeout`) would cut
/// it anyway.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The shortest `interval`: ten checks a second of one site is a load test,
/// not monitoring.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The longest `interval`: a site checked less than daily is not monitored.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest `shutdown_timeout` and `flush_timeout`.
pub const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// The longest site url, in bytes (as shown, i.e. in the record): the sink's
/// default `max_url_bytes`, so no configured url is a record the sink rejects.
pub const MAX_URL_BYTES: usize = 2048;

/// The largest `max_body_bytes`: 64 MiB (a body is held in memory when the
/// site has a regex).
pub const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// The most redirects `max_redirects` may allow (curl's default limit).
pub const MAX_REDIRECTS: u32 = 50;

/// The longest `probe`, in bytes.
pub const MAX_PROBE_BYTES: usize = 255;

/// The most request headers of one site, and the longest value.
pub const MAX_HEADERS: usize = 100;
/// See [`MAX_HEADERS`].
pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;

/// The longest request `body`.
pub const MAX_REQUEST_BODY_BYTES: usize = 1024 * 1024;

/// The longest `regex`.
pub const MAX_REGEX_BYTES: usize = 64 * 1024;
