//! A sink killed with -9 and started again: how long until it stores again,
//! with static against dynamic group membership.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rdkafka::producer::FutureProducer;

use super::records::{fill_topic, record, stored_records, stored_sql, Keys};
use super::{now_secs, start_sink, Ctx, SINK_METRICS};
use crate::report::Figure;
use website_monitor_tests::{pg, producer, unique, unique_ident};

/// A sink killed with -9 and started again in the same group: seconds from
/// the new process's start to its first stored record, with static
/// membership (`group_instance_id`, the same id again) against the baseline
/// of dynamic membership, where the dead member's partitions wait for its
/// session timeout (librdkafka default 45 s).
pub async fn sink_resume(ctx: &Ctx) -> Result<Vec<Figure>> {
    let client = pg(&ctx.stack.postgres_uri).await;
    let p = producer(&ctx.stack.brokers);
    let n = ctx.n(20_000).max(2_000);
    let mut took = Vec::new();
    for with_id in [true, false] {
        took.push(resume_once(ctx, &client, &p, n, with_id).await?);
    }
    Ok(vec![Figure::against(
        "sink.resume_after_kill9_s",
        took[0],
        "s",
        took[1],
        "dynamic membership (no group_instance_id)",
        "< 5 s",
    )])
}

/// One round of [`sink_resume`] on a fresh topic and schema, with a
/// `group_instance_id` or without: half the `n` records in, a sink started
/// and killed with -9 once it stored some, the other half in, a sink started
/// again; seconds from its start to its first stored record.
async fn resume_once(
    ctx: &Ctx,
    client: &tokio_postgres::Client,
    p: &FutureProducer,
    n: usize,
    with_id: bool,
) -> Result<f64> {
    let topic = ctx.topic("bench-resume").await;
    let schema = unique_ident("bench_resume");
    client
        .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
        .await?;
    let t0 = now_secs();
    let records: Vec<String> = (0..n)
        .map(|i| record(i, 100, t0 + i as f64 / 1000.0))
        .collect();
    let config = resume_config(ctx, &topic, &schema, with_id)?;
    let log = ctx.work.join("sink-resume.log");
    let stored_sql = stored_sql(&schema);
    let (first, rest) = records.split_at(n / 2);
    fill_topic(p, &topic, first, Keys::Url).await?;
    let crashed = start_sink(ctx, &config, &log)?;
    wait_stored(client, &stored_sql, &topic, 0, 120, "sink", &log).await?;
    crashed.kill9()?;
    fill_topic(p, &topic, rest, Keys::Url).await?;
    let at_kill = stored_records(client, &stored_sql, &topic).await;
    let started = Instant::now();
    let again = start_sink(ctx, &config, &log)?;
    wait_stored(
        client,
        &stored_sql,
        &topic,
        at_kill,
        180,
        "restarted sink",
        &log,
    )
    .await?;
    let took = started.elapsed().as_secs_f64();
    again.stop()?;
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    Ok(took)
}

/// Writes `sink-resume.toml` for [`resume_once`]: small batches, and a fresh
/// `group_instance_id` when `with_id`.
fn resume_config(ctx: &Ctx, topic: &str, schema: &str, with_id: bool) -> Result<PathBuf> {
    let id = if with_id {
        format!("group_instance_id = \"{}\"\n", unique("bench-sink"))
    } else {
        String::new()
    };
    ctx.write(
        "sink-resume.toml",
        &format!(
            "log_level = \"warn\"\n[kafka]\nbrokers = \"{}\"\n[sink]\ntopic = \"{topic}\"\ngroup_id = \"{}\"\npostgres_uri = \"{}\"\nschema = \"{schema}\"\nbatch_size = 500\nmetrics_address = \"{SINK_METRICS}\"\n{id}",
            ctx.stack.brokers,
            unique("bench-group"),
            ctx.stack.postgres_uri,
        ),
    )
}

/// Polls every 20 ms until more than `above` records of `topic` are stored;
/// fails after `secs` seconds, naming `who` and its `log`.
async fn wait_stored(
    client: &tokio_postgres::Client,
    sql: &str,
    topic: &str,
    above: i64,
    secs: u64,
    who: &str,
    log: &Path,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while stored_records(client, sql, topic).await <= above {
        if Instant::now() > deadline {
            bail!(
                "the {who} stored nothing within {secs} s; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
