//! Both connectors in this process, end to end.

use std::time::Duration;

use crate::wait::eventually;

/// A source and a sink running in this process, each with its own stop
/// token; the sink starts first, so it is in the group before the first record.
pub struct Pair {
    source: website_monitor_source::Running,
    sink: website_monitor_sink::Running,
    stop_source: tokio_util::sync::CancellationToken,
    stop_sink: tokio_util::sync::CancellationToken,
}

impl Pair {
    /// Starts the sink, then the source.
    pub async fn start(
        source: connector_common::Loaded<website_monitor_source::SourceConfig>,
        sink: connector_common::Loaded<website_monitor_sink::SinkConfig>,
    ) -> Self {
        let stop_source = tokio_util::sync::CancellationToken::new();
        let stop_sink = tokio_util::sync::CancellationToken::new();
        let sink = website_monitor_sink::start(sink, stop_sink.clone())
            .await
            .expect("sink starts");
        let source = website_monitor_source::start(
            source,
            website_monitor_source::RunOptions::default(),
            stop_source.clone(),
        )
        .await
        .expect("source starts");
        Pair {
            source,
            sink,
            stop_source,
            stop_sink,
        }
    }

    /// Stops the source and asserts every record reached Kafka; waits (up to
    /// 30 s) until `schema`'s history table (`site_check`) holds as many rows
    /// as the source had acknowledged, asserts it holds exactly that many
    /// (nothing lost, nothing stored twice); stops the sink.
    pub async fn stop_and_assert_history_holds_every_delivered_record(
        self,
        db: &tokio_postgres::Client,
        schema: &str,
    ) {
        self.stop_source.cancel();
        let summary = self.source.wait().await.expect("source stops cleanly");
        assert_eq!(summary.failed, 0, "every record delivered to Kafka");
        let count_sql = format!("SELECT count(*) FROM \"{schema}\".site_check");
        let delivered = summary.delivered;
        let stored: i64 = eventually(
            "history to hold every delivered record",
            Duration::from_secs(30),
            || async {
                let n: i64 = db.query_one(&count_sql, &[]).await.ok()?.get(0);
                (n as u64 >= delivered).then_some(n)
            },
        )
        .await;
        assert_eq!(
            stored as u64, delivered,
            "history rows == delivered records"
        );
        self.stop_sink.cancel();
        self.sink.wait().await.expect("sink stops cleanly");
    }
}
