//! The `[sink]` checks of what the sink stores where: retentions, the
//! history's partition width, and the dead-letter topic.

use std::time::Duration;

use connector_common::config::Invalid;
use connector_common::limits::{check_duration, show_duration};

use super::{SinkConfig, DAY, MAX_HISTORY_PARTITION, MAX_RETENTION};

impl SinkConfig {
    /// `dead_letter_topic`, when set, a name Kafka accepts; neither it nor
    /// `[sink.status] transitions_topic` the sink's own topic.
    pub(super) fn check_dead_letter_topic(
        &self,
        out: &mut Vec<Invalid>,
        key: &dyn Fn(&str) -> String,
    ) {
        if let Some(t) = &self.dead_letter_topic {
            if let Err(why) = crate::status::settings::check_topic_name(t) {
                out.push(Invalid::new(key("dead_letter_topic"), why));
            } else if *t == self.topic || self.status.transitions_topic.as_ref() == Some(t) {
                out.push(Invalid::new(
                    key("dead_letter_topic"),
                    format!("`{t}` is also the sink's topic or transitions_topic; give the dead letters a topic of their own (the sink would read its own rejects back)"),
                ));
            }
        }
        if self.status.transitions_topic.as_ref() == Some(&self.topic) {
            out.push(Invalid::new(
                key("status.transitions_topic"),
                format!("`{}` is also the sink's topic; give the transitions a topic of their own (the sink would read its own transitions back as checks)", self.topic),
            ));
        }
    }

    /// Retentions and the history's partition width within bounds.
    pub(super) fn check_storage(&self, out: &mut Vec<Invalid>, key: &dyn Fn(&str) -> String) {
        let hour = Duration::from_secs(3600);
        for (name, value, min, example) in [
            ("history_retention", self.history_retention, hour, "7d"),
            ("rejects_retention", self.rejects_retention, hour, "30d"),
            (
                "rollup_minute_retention",
                self.rollup_minute_retention,
                hour,
                "2d",
            ),
            (
                "rollup_hour_retention",
                self.rollup_hour_retention,
                hour,
                "35d",
            ),
            (
                "rollup_day_retention",
                self.rollup_day_retention,
                DAY,
                "400d",
            ),
        ] {
            check_duration(out, key(name), value, min, MAX_RETENTION, example);
        }
        self.check_dead_letter_topic(out, key);
        let span = self.history_partition;
        check_duration(
            out,
            key("history_partition"),
            span,
            hour,
            MAX_HISTORY_PARTITION,
            "1d",
        );
        if self.history_retention < span {
            out.push(Invalid::new(
                key("history_retention"),
                format!(
                    "{} is shorter than history_partition ({}): whole partitions are dropped, so give a retention of at least one partition",
                    show_duration(self.history_retention),
                    show_duration(span)
                ),
            ));
        }
        // The SQL API reads whole days from the day level, whole hours from
        // the hour level: each coarser level must reach at least as far back.
        for (finer, coarser, a, b) in [
            (
                "rollup_minute_retention",
                "rollup_hour_retention",
                self.rollup_minute_retention,
                self.rollup_hour_retention,
            ),
            (
                "rollup_hour_retention",
                "rollup_day_retention",
                self.rollup_hour_retention,
                self.rollup_day_retention,
            ),
        ] {
            if b < a {
                out.push(Invalid::new(
                    key(coarser),
                    format!(
                        "{} is shorter than {finer} ({}): uptime and latency over a range read the coarser level for its older part, so give {coarser} at least {}",
                        show_duration(b),
                        show_duration(a),
                        show_duration(a)
                    ),
                ));
            }
        }
        if span.as_secs() % 3600 != 0 || span.subsec_nanos() != 0 {
            out.push(Invalid::new(
                key("history_partition"),
                "must be whole hours (partitions are aligned to hours), e.g. \"1d\" or \"6h\"",
            ));
        }
    }
}
