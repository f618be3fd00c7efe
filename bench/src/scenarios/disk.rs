//! Bytes on disk of the sink's partitioned tables, per row.

use anyhow::Result;

use crate::report::Figure;

/// What the partitions of one partitioned table take on disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disk {
    /// Rows in all partitions.
    pub rows: i64,
    /// Heap bytes (with TOAST, free space and visibility maps).
    pub heap: i64,
    /// Index bytes.
    pub index: i64,
}

impl Disk {
    /// Heap and index bytes together.
    pub fn total(&self) -> i64 {
        self.heap + self.index
    }

    /// `bytes` per row (NaN without rows).
    fn per_row(&self, bytes: i64) -> f64 {
        if self.rows == 0 {
            f64::NAN
        } else {
            bytes as f64 / self.rows as f64
        }
    }

    /// The figures of a history table: `{prefix}.history_bytes_per_row`
    /// (heap + indexes, held to `target`), its heap and index parts, and the rows.
    pub fn history_figures(&self, prefix: &str, target: &str) -> Vec<Figure> {
        vec![
            Figure::plain(
                &format!("{prefix}.history_bytes_per_row"),
                self.per_row(self.total()),
                "B/row",
            )
            .with_target(target),
            Figure::plain(
                &format!("{prefix}.history_heap_bytes_per_row"),
                self.per_row(self.heap),
                "B/row",
            ),
            Figure::plain(
                &format!("{prefix}.history_index_bytes_per_row"),
                self.per_row(self.index),
                "B/row",
            ),
            Figure::plain(&format!("{prefix}.history_rows"), self.rows as f64, "rows"),
        ]
    }
}

/// What the partitions of `parent` (schema-qualified, quoted) take, and how
/// many rows they hold.
pub async fn partitions(client: &tokio_postgres::Client, parent: &str) -> Result<Disk> {
    let row = client
        .query_one(
            "SELECT coalesce(sum(pg_table_size(inhrelid)), 0)::int8, \
                    coalesce(sum(pg_indexes_size(inhrelid)), 0)::int8 \
             FROM pg_inherits WHERE inhparent = $1::text::regclass",
            &[&parent],
        )
        .await?;
    let rows: i64 = client
        .query_one(&format!("SELECT count(*) FROM {parent}"), &[])
        .await?
        .get(0);
    Ok(Disk {
        rows,
        heap: row.get(0),
        index: row.get(1),
    })
}
