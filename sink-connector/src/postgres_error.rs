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
/// record rather than for the connection, the server or the schema: SQLSTATE
/// classes 22 (data exception: text `jsonb` refuses, a value out of range),
/// 23 (integrity constraint: a `CHECK` an operator added), 54 (program
/// limit: stack depth, a value too large), P0 (raised by PL/pgSQL, e.g. an
/// operator's trigger), 2F, 38 and 39 (raised in or by a function a trigger
/// calls). Only a candidate: the batch writer rejects a record only when it
/// fails on its own ([`crate::refuse`]).
pub fn is_record_refusal(e: &tokio_postgres::Error) -> bool {
    const CLASSES: [&str; 7] = ["22", "23", "54", "P0", "2F", "38", "39"];
    e.code()
        .is_some_and(|c| CLASSES.iter().any(|class| c.code().starts_with(class)))
}
