//! Why a record is rejected: the reasons' stable names.

/// Why a record was not stored as a check. The label of
/// `website_monitor_records_rejected_total` and the `reason` column of the
/// rejects table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No payload at all (a tombstone).
    Empty,
    /// Larger than `max_record_bytes`.
    TooLarge,
    /// Not valid UTF-8.
    NotUtf8,
    /// Not valid JSON.
    NotJson,
    /// Valid JSON, but not an object.
    NotObject,
    /// An object without a `url` key (or with `url: null`).
    NoUrl,
    /// `url` is not a string.
    UrlNotString,
    /// `url` is empty or blank.
    EmptyUrl,
    /// `url` is longer than `max_url_bytes`.
    UrlTooLong,
    /// A string holds `\u0000`, which PostgreSQL's `jsonb` cannot store.
    NulInString,
    /// A string holds an escaped UTF-16 surrogate without its pair.
    UnpairedSurrogate,
    /// Arrays and objects nested deeper than [`crate::jsonb::MAX_DEPTH`].
    TooDeep,
    /// A number PostgreSQL's `numeric` cannot hold.
    NumberOutOfRange,
    /// `checked_at` (or the Kafka timestamp) is more than a day ahead of the
    /// sink's clock: a probe's clock is wrong. Refused so that hostile times
    /// cannot make partitions for far-future days.
    InFuture,
    /// PostgreSQL itself refused the record; the detail is its message.
    Database,
}

impl Reason {
    /// Every reason (the sink's `/metrics` shows each at 0 from the start,
    /// so a rule on the counter's increase sees the first reject).
    pub const ALL: [Reason; 15] = [
        Reason::Empty,
        Reason::TooLarge,
        Reason::NotUtf8,
        Reason::NotJson,
        Reason::NotObject,
        Reason::NoUrl,
        Reason::UrlNotString,
        Reason::EmptyUrl,
        Reason::UrlTooLong,
        Reason::NulInString,
        Reason::UnpairedSurrogate,
        Reason::TooDeep,
        Reason::NumberOutOfRange,
        Reason::InFuture,
        Reason::Database,
    ];

    /// The stable name used in metrics and in the `reason` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Empty => "empty",
            Reason::TooLarge => "too_large",
            Reason::NotUtf8 => "not_utf8",
            Reason::NotJson => "not_json",
            Reason::NotObject => "not_object",
            Reason::NoUrl => "no_url",
            Reason::UrlNotString => "url_not_string",
            Reason::EmptyUrl => "empty_url",
            Reason::UrlTooLong => "url_too_long",
            Reason::NulInString => "nul_in_string",
            Reason::UnpairedSurrogate => "unpaired_surrogate",
            Reason::TooDeep => "too_deep",
            Reason::NumberOutOfRange => "number_out_of_range",
            Reason::InFuture => "checked_at_in_future",
            Reason::Database => "database",
        }
    }
}
