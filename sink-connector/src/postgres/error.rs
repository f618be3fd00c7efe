//! What a PostgreSQL error means for the sink: its message for logs and the
//! rejects table, whether the connection is to blame (reconnect and retry),
//! and whether it can lie in a record (look for the record to reject).

use std::error::Error as StdError;

/// PostgreSQL's message, code and detail, for the rejects table.
pub fn db_message(e: &tokio_postgres::Error) -> String {
    let text = match e.as_db_error() {
        Some(d) => {
            let mut s = format!("PostgreSQL {}: {}", d.code().code(), d.message());
            if let Some(detail) = d.detail() {
                s.push_str(" (");
                s.push_str(detail);
                s.push(')');
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = StdError::source(e);
            while let Some(inner) = source {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                source = inner.source();
            }
            s
        }
    };
    text.replace('\0', "")
}

/// Whether a PostgreSQL error is about the connection (retry) rather than the
/// SQL: no SQLSTATE (I/O), or class 08 (connection), 57P (operator
/// intervention, e.g. a restart), 53 (insufficient resources, e.g. too many
/// connections) or 40 (transaction rollback: serialization failure, deadlock).
pub fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(c) => {
            let c = c.code();
            c.starts_with("08")
                || c.starts_with("57P")
                || c.starts_with("53")
                || c.starts_with("40")
        }
    }
}

/// Whether a failed statement may have been refused for something in a
/// record: any SQLSTATE outside the classes that speak of the connection,
/// the server or the session — 08 connection, 25 transaction state, 28
/// authorization, 3D/3F missing database or schema, 40 rollback
/// (serialization, deadlock), 53 resources, 55 object state (a lock not
/// available), 57 operator intervention (a restart, a statement timeout), 58
/// system error, F0 configuration, XX internal. Data exceptions (22),
/// constraints (23), program limits (54), anything an operator's trigger
/// raises (P0001, a custom `45000`, a 42 from its dynamic SQL) are candidates.
/// Only candidates: the batch writer first writes a canary record (a
/// refusal that hits it too lies in the schema, not in a record: a column
/// added `NOT NULL`, a revoked privilege, a dropped table) and then rejects a
/// record only when it fails on its own or in order ([`crate::postgres::refuse`]).
pub fn is_record_refusal(e: &tokio_postgres::Error) -> bool {
    const ENVIRONMENT: [&str; 13] = [
        "08", "25", "28", "3D", "3F", "40", "53", "55", "57", "58", "F0", "XX", "HV",
    ];
    e.code().is_some_and(|c| {
        let c = c.code();
        !ENVIRONMENT.iter().any(|class| c.starts_with(class))
    })
}
