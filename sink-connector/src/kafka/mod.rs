//! The Kafka side of the sink: [`consumer`] — the group consumer, its
//! librdkafka context (lag, readiness, rebalances, fatal errors) and leaving
//! the group; [`commit`](mod@commit) — committing a written batch's offsets
//! and keeping the commit-age metric current. `commit` uses `consumer`,
//! never the other way. [`outbox`]: producing committed rows after commit,
//! for [`transitions`] (the site status transitions topic) and
//! [`dead_letter`] (the dead-letter topic).

pub mod commit;
pub mod consumer;
pub mod dead_letter;
pub mod outbox;
pub mod transitions;
