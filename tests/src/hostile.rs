//! A catalogue of hostile Kafka records for the sink, each with what the sink
//! must make of it: stored as a check, or rejected with a given reason.
//!
//! The sink is run with [`MAX_RECORD_BYTES`] and the default `max_url_bytes`
//! (2048). Records refused by PostgreSQL itself (reason `database`) need the
//! objects [`database_refusals_sql`] creates in the sink's schema.

/// `max_record_bytes` the catalogue is written for.
pub const MAX_RECORD_BYTES: usize = 262_144;

/// What the sink must make of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A history row (and the latest state of its url).
    Stored,
    /// A row in the rejects table with this reason.
    Rejected(&'static str),
}

/// One kind of hostile record.
#[derive(Debug, Clone)]
pub struct Kind {
    /// What it is.
    pub name: &'static str,
    /// The Kafka key.
    pub key: Option<Vec<u8>>,
    /// The Kafka value (`None`: a tombstone).
    pub value: Option<Vec<u8>>,
    /// The Kafka timestamp to produce with, in ms (`None`: the producer's).
    pub timestamp_ms: Option<i64>,
    /// What the sink must make of it.
    pub expect: Expect,
}

fn kind(name: &'static str, value: impl Into<Vec<u8>>, expect: Expect) -> Kind {
    Kind {
        name,
        key: None,
        value: Some(value.into()),
        timestamp_ms: None,
        expect,
    }
}

fn rejected(name: &'static str, value: impl Into<Vec<u8>>, reason: &'static str) -> Kind {
    kind(name, value, Expect::Rejected(reason))
}

fn stored(name: &'static str, value: impl Into<Vec<u8>>) -> Kind {
    kind(name, value, Expect::Stored)
}

/// SQL run in the sink's schema before the sink writes: a `CHECK` on the
/// history table and a trigger on the latest-state table that refuse the
/// catalogue's `database` records (as an operator's own rules would).
pub fn database_refusals_sql(schema: &str) -> String {
    format!(
        "ALTER TABLE \"{schema}\".site_check ADD CONSTRAINT no_599 CHECK (status_code IS DISTINCT FROM 599);
         CREATE FUNCTION \"{schema}\".refuse_raise() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.url = 'http://raise.test/' THEN RAISE EXCEPTION 'this url is refused by a trigger'; END IF;
         IF NEW.url = 'http://blocked.test/' THEN RAISE EXCEPTION 'url is blocked' USING ERRCODE = '45000'; END IF;
         IF NEW.url = 'http://skip.test/' THEN RETURN NULL; END IF;
         RETURN NEW; END $$;
         CREATE TRIGGER refuse_raise BEFORE INSERT OR UPDATE ON \"{schema}\".site
         FOR EACH ROW EXECUTE FUNCTION \"{schema}\".refuse_raise();"
    )
}

/// Every kind: at least 50 rejected ones and the storable hostile ones.
pub fn catalogue() -> Vec<Kind> {
    let nest = |open: &str, close: &str, n: usize| {
        format!(
            "{{\"url\":\"http://deep.test/\",\"d\":{}1{}}}",
            open.repeat(n),
            close.repeat(n)
        )
    };
    let objects = |n: usize| {
        format!(
            "{{\"url\":\"http://deep.test/\",\"d\":{}1{}}}",
            "{\"a\":".repeat(n),
            "}".repeat(n)
        )
    };
    let many_keys: String = (0..10_000).map(|i| format!(",\"k{i}\":{i}")).collect();
    let mut kinds = vec![
        Kind {
            name: "tombstone",
            key: Some(b"http://t.test/".to_vec()),
            value: None,
            timestamp_ms: None,
            expect: Expect::Rejected("empty"),
        },
        rejected("empty value", "", "empty"),
        rejected("only whitespace", " \n\t ", "empty"),
        rejected(
            "invalid UTF-8",
            &b"{\"url\":\"http://x.test/\xff\"}"[..],
            "not_utf8",
        ),
        rejected(
            "overlong UTF-8 NUL",
            &b"{\"url\":\"http://x.test/\xc0\x80\"}"[..],
            "not_utf8",
        ),
        rejected(
            "UTF-8-encoded surrogate",
            &b"{\"url\":\"http://x.test/\xed\xa0\x80\"}"[..],
            "not_utf8",
        ),
        rejected(
            "truncated UTF-8",
            &b"{\"url\":\"http://x.test/\xe2\x82\"}"[..],
            "not_utf8",
        ),
        rejected("plain text", "hello", "not_json"),
        rejected("truncated object", r#"{"url":"http://x.test/""#, "not_json"),
        rejected(
            "trailing garbage",
            r#"{"url":"http://x.test/"} x"#,
            "not_json",
        ),
        rejected("two objects", r#"{"url":"http://x.test/"} {}"#, "not_json"),
        rejected(
            "NaN literal",
            r#"{"url":"http://x.test/","x":NaN}"#,
            "not_json",
        ),
        rejected(
            "Infinity literal",
            r#"{"url":"http://x.test/","x":Infinity}"#,
            "not_json",
        ),
        rejected("single quotes", "{'url':'http://x.test/'}", "not_json"),
        rejected("comment", "{\"url\":\"http://x.test/\"} // c", "not_json"),
        rejected(
            "raw control character",
            "{\"url\":\"http://x.test/\u{1}\"}",
            "not_json",
        ),
        rejected(
            "unterminated string",
            r#"{"url":"http://x.test/}"#,
            "not_json",
        ),
        rejected(
            "invalid escape",
            r#"{"url":"http://x.test/\x"}"#,
            "not_json",
        ),
        rejected(
            "invalid unicode escape",
            r#"{"url":"http://x.test/\u12G4"}"#,
            "not_json",
        ),
        rejected(
            "leading zero",
            r#"{"url":"http://x.test/","n":01}"#,
            "not_json",
        ),
        rejected(
            "duplicate url key",
            r#"{"url":"http://a.test/","url":"http://b.test/"}"#,
            "not_json",
        ),
        rejected(
            "byte order mark",
            "\u{feff}{\"url\":\"http://x.test/\"}",
            "not_json",
        ),
        rejected(
            "trailing NUL byte",
            "{\"url\":\"http://x.test/\"}\0",
            "not_json",
        ),
        rejected(
            "lone surrogate in the url",
            r#"{"url":"http://x.test/\ud800"}"#,
            "unpaired_surrogate",
        ),
        rejected("array", r#"["http://x.test/"]"#, "not_object"),
        rejected("string", r#""http://x.test/""#, "not_object"),
        rejected("number", "42", "not_object"),
        rejected("null", "null", "not_object"),
        rejected("boolean", "true", "not_object"),
        rejected("no url", r#"{"href":"http://x.test/"}"#, "no_url"),
        rejected("null url", r#"{"url":null}"#, "no_url"),
        rejected("numeric url", r#"{"url":5}"#, "url_not_string"),
        rejected("object url", r#"{"url":{"a":1}}"#, "url_not_string"),
        rejected(
            "array url",
            r#"{"url":["http://x.test/"]}"#,
            "url_not_string",
        ),
        rejected("boolean url", r#"{"url":true}"#, "url_not_string"),
        rejected("empty url", r#"{"url":""}"#, "empty_url"),
        rejected("blank url", r#"{"url":"   "}"#, "empty_url"),
        rejected(
            "url over max_url_bytes",
            format!("{{\"url\":\"http://x.test/{}\"}}", "u".repeat(3000)),
            "url_too_long",
        ),
        rejected(
            "record over max_record_bytes",
            format!(
                "{{\"url\":\"http://x.test/\",\"p\":\"{}\"}}",
                "p".repeat(MAX_RECORD_BYTES)
            ),
            "too_large",
        ),
        rejected(
            "\\u0000 in a value",
            r#"{"url":"http://x.test/","e":"a\u0000b"}"#,
            "nul_in_string",
        ),
        rejected(
            "\\u0000 in a key",
            r#"{"url":"http://x.test/","k\u0000":1}"#,
            "nul_in_string",
        ),
        rejected(
            "\\u0000 in the url",
            r#"{"url":"http://x.test/\u0000"}"#,
            "nul_in_string",
        ),
        rejected(
            "lone high surrogate",
            r#"{"url":"http://x.test/","s":"\ud800"}"#,
            "unpaired_surrogate",
        ),
        rejected(
            "lone low surrogate",
            r#"{"url":"http://x.test/","s":"\udc00"}"#,
            "unpaired_surrogate",
        ),
        rejected(
            "high surrogate then a letter",
            r#"{"url":"http://x.test/","s":"\ud800\u0041"}"#,
            "unpaired_surrogate",
        ),
        rejected(
            "surrogate deep inside",
            r#"{"url":"http://x.test/","a":[{"b":["\udbff"]}]}"#,
            "unpaired_surrogate",
        ),
        rejected("20,000 nested arrays", nest("[", "]", 20_000), "too_deep"),
        rejected("300 nested objects", objects(300), "too_deep"),
        rejected(
            "exponent too large for numeric",
            r#"{"url":"http://x.test/","n":1e999999}"#,
            "number_out_of_range",
        ),
        rejected(
            "exponent too small for numeric",
            r#"{"url":"http://x.test/","n":1e-99999}"#,
            "number_out_of_range",
        ),
        rejected(
            "140,000-digit integer",
            format!(
                "{{\"url\":\"http://x.test/\",\"n\":{}}}",
                "9".repeat(140_000)
            ),
            "number_out_of_range",
        ),
        rejected(
            "refused by a CHECK constraint",
            r#"{"url":"http://check.test/","status_code":599}"#,
            "database",
        ),
        rejected(
            "refused by a trigger",
            r#"{"url":"http://raise.test/"}"#,
            "database",
        ),
        rejected(
            "refused by a trigger with its own SQLSTATE",
            r#"{"url":"http://blocked.test/"}"#,
            "database",
        ),
        rejected(
            "skipped by a trigger",
            r#"{"url":"http://skip.test/"}"#,
            "database",
        ),
        stored(
            "duration 1e400",
            r#"{"url":"http://s.test/o","duration":1e400,"checked_at":1e400,"status_code":-1e400}"#,
        ),
        stored(
            "zero with a huge exponent",
            r#"{"url":"http://s.test/p","n":0e99999999,"m":0.01e131073}"#,
        ),
        stored(
            "checked_at 1e300",
            r#"{"url":"http://s.test/a","checked_at":1e300}"#,
        ),
        stored(
            "checked_at -1e20",
            r#"{"url":"http://s.test/b","checked_at":-1e20}"#,
        ),
        stored(
            "checked_at in year 99999",
            r#"{"url":"http://s.test/c","checked_at":"99999-01-01T00:00:00Z"}"#,
        ),
        stored(
            "status_code 1e20",
            r#"{"url":"http://s.test/d","status_code":1e20}"#,
        ),
        stored(
            "duration as text",
            r#"{"url":"http://s.test/e","duration":"NaN"}"#,
        ),
        stored(
            "duration -1e308",
            r#"{"url":"http://s.test/f","duration":-1e308}"#,
        ),
        stored("ok as text", r#"{"url":"http://s.test/g","ok":"yes"}"#),
        stored("surrogate pair", r#"{"url":"http://s.test/\ud83d\ude00"}"#),
        stored(
            "10,000 keys",
            format!("{{\"url\":\"http://s.test/h\"{many_keys}}}"),
        ),
        stored("200 nested arrays", nest("[", "]", 200)),
        stored(
            "number with a large exponent numeric holds",
            r#"{"url":"http://s.test/i","n":1e100000}"#,
        ),
        stored("userinfo url", r#"{"url":"http://alice:***@s.test/j"}"#),
        stored(
            "escaped backslash before u0000",
            r#"{"url":"http://s.test/k","e":"a\\u0000"}"#,
        ),
        Kind {
            name: "100 KB key",
            key: Some(vec![b'k'; 100_000]),
            value: Some(br#"{"url":"http://s.test/l"}"#.to_vec()),
            timestamp_ms: None,
            expect: Expect::Stored,
        },
        Kind {
            name: "Kafka timestamp i64::MAX",
            key: None,
            value: Some(br#"{"url":"http://s.test/m"}"#.to_vec()),
            timestamp_ms: Some(i64::MAX),
            expect: Expect::Stored,
        },
        Kind {
            name: "Kafka timestamp in year 10000",
            key: None,
            value: Some(br#"{"url":"http://s.test/n"}"#.to_vec()),
            timestamp_ms: Some(253_402_300_800_000),
            expect: Expect::Stored,
        },
        Kind {
            name: "rejected record with a Kafka timestamp i64::MAX",
            key: None,
            value: Some(b"not json".to_vec()),
            timestamp_ms: Some(i64::MAX),
            expect: Expect::Rejected("not_json"),
        },
    ];
    kinds.shrink_to_fit();
    kinds
}

/// A good record, numbered.
pub fn good(n: usize) -> Vec<u8> {
    format!(
        "{{\"url\":\"http://good.test/{}\",\"n\":{n},\"ok\":true}}",
        n % 50
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_holds_at_least_fifty_kinds_of_bad_records() {
        let bad = catalogue()
            .iter()
            .filter(|k| matches!(k.expect, Expect::Rejected(_)))
            .count();
        assert!(bad >= 50, "{bad} kinds of bad records");
    }
}

/// Property-test strategies: JSON text (valid or nearly so) full of what
/// PostgreSQL's `jsonb` and the sink's columns find hard.
pub mod strategy {
    use proptest::prelude::*;

    /// A JSON string literal built from awkward pieces: `\u0000`, lone and
    /// paired surrogates, any `\uXXXX`, escaped quotes, control escapes.
    pub fn string() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-z:/.]{0,6}",
            Just("\\u0000".to_owned()),
            Just("\\ud800".to_owned()),
            Just("\\udfff".to_owned()),
            Just("\\ud83d\\ude00".to_owned()),
            (0u32..0x1_0000).prop_map(|u| format!("\\u{u:04x}")),
            Just("\\\\".to_owned()),
            Just("\\\"".to_owned()),
            Just("\\n".to_owned()),
            Just("é😀".to_owned()),
        ];
        prop::collection::vec(piece, 0..5).prop_map(|p| format!("\"{}\"", p.concat()))
    }

    /// A JSON number: integers of any size, fractions, exponents in and far
    /// out of every range.
    pub fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|i| i.to_string()),
            any::<u64>().prop_map(|i| i.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            (any::<i32>(), -300_000i64..300_000).prop_map(|(m, e)| format!("{m}e{e}")),
            (1usize..3000).prop_map(|n| "7".repeat(n)),
            (1usize..3000).prop_map(|n| format!("0.{}1", "0".repeat(n))),
        ]
    }

    /// Any JSON value, nested up to a few levels, plus deep runs of
    /// brackets around the limit.
    pub fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            number(),
            string(),
        ];
        let nested = leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((string(), inner), 0..6).prop_map(|v| {
                    let fields: Vec<String> = v.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        });
        prop_oneof![
            8 => nested,
            1 => (200usize..320).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        ]
    }

    /// A record: an object whose `url` is usually a usable string, with
    /// fields named like the source's (of any type) and others.
    pub fn record() -> impl Strategy<Value = String> {
        let url = prop_oneof![
            4 => (0u32..20).prop_map(|n| format!("\"http://p.test/{n}\"")),
            1 => string(),
            1 => value(),
        ];
        let field = prop_oneof![
            Just("\"checked_at\"".to_owned()),
            Just("\"ok\"".to_owned()),
            Just("\"status_code\"".to_owned()),
            Just("\"duration\"".to_owned()),
            string(),
        ];
        (url, prop::collection::vec((field, value()), 0..5)).prop_map(|(url, fields)| {
            let mut s = format!("{{\"url\":{url}");
            for (k, v) in fields {
                s.push(',');
                s.push_str(&k);
                s.push(':');
                s.push_str(&v);
            }
            s.push('}');
            s
        })
    }

    /// Bytes a record could be: a generated record, maybe cut short or with
    /// a byte flipped, or arbitrary bytes.
    pub fn payload() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => record().prop_map(String::into_bytes),
            1 => (record(), any::<prop::sample::Index>()).prop_map(|(r, at)| {
                let b = r.into_bytes();
                b[..at.index(b.len() + 1)].to_vec()
            }),
            1 => (record(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(r, at, x)| {
                let mut b = r.into_bytes();
                let i = at.index(b.len());
                b[i] = x;
                b
            }),
            1 => prop::collection::vec(any::<u8>(), 0..64),
        ]
    }
}
