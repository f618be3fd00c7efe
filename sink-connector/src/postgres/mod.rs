//! The PostgreSQL side of the sink, from the bottom up:
//!
//! - [`error`]: what a PostgreSQL error means (retry, reconnect, or look for
//!   a refused record), and its message for logs and the rejects table;
//! - [`migrate`]: table names (always quoted) and versioned migrations under
//!   an advisory lock;
//! - [`sql`]: connecting, and the statements of the batch transaction,
//!   prepared per connection;
//! - [`partitions`]: making time partitions before a batch, dropping them
//!   past retention;
//! - [`kept`]: what the rejects table keeps of a refused record;
//! - [`history`]: a batch's checks as compact history rows and rollup counts;
//! - [`status_rows`]: the status tables' rows (site, probes, transitions,
//!   ad-hoc windows) and their lock order;
//! - [`status`](mod@status): the site status model fed with a batch's
//!   checks in its transaction, and writer 0's sweep;
//! - [`write`](mod@write): one batch transaction — exactly-once through a
//!   per-partition offsets table locked in the same transaction;
//! - [`refuse`]: writing a part whose records PostgreSQL may refuse, and the
//!   search for them, kept across attempts;
//! - [`upgrade`]: moving the rows of the history table of migrations
//!   0001–0005 into the partitioned one;
//! - [`shared`]: what every writer shares, and opening a writer's
//!   connection (connect, migrate, prepare, move an old history table);
//! - [`writer`]: the `writers` connections, each writing its part of a batch
//!   at once with the others; bounded attempts, retries, readiness.
//!
//! Each module imports only the ones above it in this list.

pub mod error;
pub mod history;
pub mod kept;
pub mod migrate;
pub mod partitions;
pub mod refuse;
pub mod shared;
pub mod sql;
pub mod status;
pub mod status_rows;
pub mod sweep;
pub mod upgrade;
pub mod write;
pub mod writer;
