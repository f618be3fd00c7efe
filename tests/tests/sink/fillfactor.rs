//! Room for HOT updates in the rollup rows every batch updates (migration 17).

use website_monitor_tests::sink::SinkTest;

/// The rollup partitions whose rows every batch updates (each site's hour
/// and day rows, the fleet's rows at every level) are made with
/// `fillfactor = 70`, those of before migration 17 get it at the upgrade,
/// and the per-minute partitions (most of the disk, rows live for minutes)
/// are left full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_partitions_updated_by_every_batch_leave_room_in_their_pages() {
    let t = SinkTest::new("sink_fillfactor", 1).await;
    let (db, schema) = (&t.db, &t.schema);
    let tables = [
        "site_per_minute",
        "site_per_hour",
        "site_per_day",
        "site_fleet_per_minute",
        "site_fleet_per_hour",
        "site_fleet_per_day",
    ];
    let make = |from: &str, to: &str| {
        tables
            .iter()
            .map(|table| {
                format!("SELECT \"{schema}\".site_make_partitions('\"{schema}\".{table}'::regclass, {from}, {to}, '1 day');")
            })
            .collect::<String>()
    };
    // An older deployment's partitions, then the upgrade and newer ones.
    t.migrate_up_to(16).await;
    db.batch_execute(&make("now()", "now()")).await.unwrap();
    t.migrate().await;
    db.batch_execute(&make(
        "now() + interval '40 days'",
        "now() + interval '40 days'",
    ))
    .await
    .unwrap();
    for table in tables {
        let rows = db
            .query(
                "SELECT c.relname::text, coalesce(array_to_string(c.reloptions, ','), '')
                 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = to_regclass($1) ORDER BY 1",
                &[&format!("\"{schema}\".{table}")],
            )
            .await
            .unwrap();
        assert!(
            rows.len() >= 2,
            "{table}: partitions before and after the upgrade: {rows:?}"
        );
        let expected = if table == "site_per_minute" {
            ""
        } else {
            "fillfactor=70"
        };
        for row in rows {
            let (name, options): (String, String) = (row.get(0), row.get(1));
            assert_eq!(options, expected, "{name}");
        }
    }
}
