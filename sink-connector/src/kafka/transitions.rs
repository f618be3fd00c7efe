//! The transitions topic (`[sink.status] transitions_topic`): every
//! committed site status transition, as JSON keyed by site id, produced
//! after commit from `<table>_transition` (the rows not yet marked
//! published), then marked — an outbox (`super::outbox`). At least once: a crash, a
//! timeout or a PostgreSQL error between the produce and the mark produces
//! those transitions again, with the same `id`, which a downstream stage
//! de-duplicates on. One sink at a time produces them, oldest per site
//! first, so a site's transitions reach the topic in `seq` order.

use tokio_postgres::{Client, Row, Statement};

use crate::kafka::outbox::{Letter, Outbox};
use crate::metrics as m;
use crate::migrate::Tables;

/// The transitions table as an outbox.
pub(crate) struct Transitions {
    table: String,
    unpublished: String,
    mark: String,
    backlog: String,
}

impl Transitions {
    /// The statements over `tables`' transitions table.
    pub(crate) fn new(tables: &Tables) -> Self {
        let tr = tables.function("_transition");
        Self {
            unpublished: format!(
                "SELECT json_build_object('id', tr.id, 'site_id', tr.site_id, 'seq', tr.seq,
                        'url', s.url, 'from', tr.from_state, 'to', tr.to_state, 'at', tr.at,
                        'reason', tr.reason, 'probes', tr.probes,
                        'partition', tr.\"partition\", 'offset', tr.\"offset\")::text,
                        tr.site_id, tr.seq
                 FROM {tr} tr LEFT JOIN {site} s ON s.id = tr.site_id
                 WHERE tr.published_at IS NULL ORDER BY tr.site_id, tr.seq LIMIT $1",
                site = tables.site
            ),
            mark: format!(
                "UPDATE {tr} tr SET published_at = now()
                 FROM unnest($1::int8[], $2::int8[]) AS k(s, q)
                 WHERE tr.site_id = k.s AND tr.seq = k.q AND tr.published_at IS NULL"
            ),
            backlog: format!("SELECT count(*) FROM {tr} WHERE published_at IS NULL"),
            table: tr,
        }
    }
}

impl Outbox for Transitions {
    type Mark = (i64, i64);
    const STREAM: &'static str = "transitions";
    const PRODUCED: &'static str = m::STATUS_TRANSITIONS_PUBLISHED;

    fn table(&self) -> &str {
        &self.table
    }

    fn statements(&self) -> [&str; 3] {
        [&self.unpublished, &self.mark, &self.backlog]
    }

    fn letter(r: &Row) -> Letter<(i64, i64)> {
        let json: String = r.get(0);
        let (site, seq): (i64, i64) = (r.get(1), r.get(2));
        Letter {
            key: Some(site.to_string().into_bytes()),
            value: Some(json.into_bytes()),
            headers: None,
            mark: (site, seq),
        }
    }

    async fn mark(
        &self,
        client: &Client,
        mark: &Statement,
        marks: Vec<&(i64, i64)>,
    ) -> Result<(), tokio_postgres::Error> {
        let sites: Vec<i64> = marks.iter().map(|k| k.0).collect();
        let seqs: Vec<i64> = marks.iter().map(|k| k.1).collect();
        client.execute(mark, &[&sites, &seqs]).await?;
        Ok(())
    }
}
