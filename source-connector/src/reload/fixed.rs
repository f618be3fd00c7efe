//! The settings a reload cannot change: what the producer, the check
//! threads, the telemetry server, the logger and shutdown were built from
//! at start. [`restart_only`] names each one that differs.

use connector_common::config::Loaded;

use crate::config::SourceConfig;

/// Every key of `new` that differs from `old` and takes a restart to
/// change, in the order of the file's sections. Everything else — the
/// sites, `sites_file`, `shard` and the site defaults — a reload applies.
pub fn restart_only(old: &Loaded<SourceConfig>, new: &Loaded<SourceConfig>) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut differs = |key: &'static str, same: bool| {
        if !same {
            out.push(key);
        }
    };
    differs("log_level", old.log_level == new.log_level);
    differs("log_format", old.log_format == new.log_format);
    let (k, n) = (&old.kafka, &new.kafka);
    differs("kafka.brokers", k.brokers == n.brokers);
    differs(
        "kafka.security_protocol",
        k.security_protocol == n.security_protocol,
    );
    differs("kafka.ssl_ca", k.ssl_ca == n.ssl_ca);
    differs("kafka.ssl_cert", k.ssl_cert == n.ssl_cert);
    differs("kafka.ssl_key", k.ssl_key == n.ssl_key);
    differs("kafka.sasl_mechanism", k.sasl_mechanism == n.sasl_mechanism);
    differs("kafka.sasl_username", k.sasl_username == n.sasl_username);
    differs("kafka.sasl_password", k.sasl_password == n.sasl_password);
    differs("kafka.options", k.options == n.options);
    let (s, n) = (&old.section, &new.section);
    differs("source.topic", s.topic == n.topic);
    differs("source.probe", s.probe == n.probe);
    differs("source.concurrency", s.concurrency == n.concurrency);
    differs("source.threads", s.threads == n.threads);
    differs(
        "source.metrics_address",
        s.metrics_address == n.metrics_address,
    );
    differs(
        "source.per_site_metrics",
        s.per_site_metrics == n.per_site_metrics,
    );
    differs(
        "source.shutdown_timeout",
        s.shutdown_timeout == n.shutdown_timeout,
    );
    differs("source.flush_timeout", s.flush_timeout == n.flush_timeout);
    differs(
        "source.max_buffered_records",
        s.max_buffered_records == n.max_buffered_records,
    );
    differs(
        "source.delivery_timeout",
        s.delivery_timeout == n.delivery_timeout,
    );
    differs("source.reload_watch", s.reload_watch == n.reload_watch);
    differs("source.sites_topic", s.sites_topic == n.sites_topic);
    differs("source.sites_group", s.sites_group == n.sites_group);
    differs(
        "source.sites_group_session_timeout",
        s.sites_group_session_timeout == n.sites_group_session_timeout,
    );
    differs("source.http_sd_url", s.http_sd_url == n.http_sd_url);
    differs(
        "source.http_sd_refresh",
        s.http_sd_refresh == n.http_sd_refresh,
    );
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use connector_common::config::{load_str, Section};

    use super::*;

    fn load(text: &str) -> Loaded<SourceConfig> {
        load_str(text, Path::new("t.toml"), Section::Source, &|_| None).unwrap()
    }

    #[test]
    fn sites_and_their_defaults_may_change_the_rest_is_named() {
        let old = load(
            "[kafka]\nbrokers = \"a:9092\"\n[source]\ntopic = \"t\"\n\
             [[source.sites]]\nurl = \"http://a.example/\"\n",
        );
        let sites_only = load(
            "[kafka]\nbrokers = \"a:9092\"\n[source]\ntopic = \"t\"\ninterval = \"5s\"\n\
             shard = \"1/2\"\nregex = \"x\"\n[[source.sites]]\nurl = \"http://b.example/\"\n",
        );
        assert!(restart_only(&old, &sites_only).is_empty());
        let mut fixed = load(
            "log_level = \"debug\"\n[kafka]\nbrokers = \"b:9092\"\n[source]\ntopic = \"u\"\n\
             threads = 3\n[[source.sites]]\nurl = \"http://a.example/\"\n",
        );
        fixed.section.reload_watch = Some(Duration::from_secs(1));
        assert_eq!(
            restart_only(&old, &fixed),
            vec![
                "log_level",
                "kafka.brokers",
                "source.topic",
                "source.threads",
                "source.reload_watch"
            ]
        );
    }
}
