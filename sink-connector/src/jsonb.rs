//! What PostgreSQL's `jsonb` refuses in text that is valid JSON, found before
//! the record reaches PostgreSQL: a string or key holding `\u0000`, an escaped
//! UTF-16 surrogate without its pair (`"\ud800"`), nesting deeper than
//! [`MAX_DEPTH`], and a number outside what `numeric` can hold.
//!
//! [`check`] is one linear pass over bytes that `serde_json` has already
//! accepted as JSON, so it tracks only strings, brackets and numbers; it never
//! recurses and never allocates. Anything PostgreSQL still refuses is found
//! by the search for refused records ([`crate::postgres::refuse`]); this pass keeps the
//! common cases off that slower path.

/// Deepest nesting of arrays and objects accepted. PostgreSQL parses `jsonb`
/// recursively and refuses deep documents with SQLSTATE 54001 (stack depth
/// limit, reached at a few thousand levels with the default
/// `max_stack_depth`); records of this project are 3 levels deep.
pub const MAX_DEPTH: usize = 256;

/// `numeric` holds at most this many decimal digits before the point.
const MAX_WEIGHT_DIGITS: i64 = 131_072;
/// ... and at most this many after it.
const MAX_SCALE: i64 = 16_383;

/// Why `jsonb` would refuse the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A string or key holds `\u0000`.
    Nul,
    /// An escaped UTF-16 surrogate without its other half.
    LoneSurrogate,
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A number `numeric` cannot represent (e.g. `1e200000`).
    NumberOutOfRange,
}

impl Refusal {
    /// What is wrong, for the rejects table.
    pub fn detail(self) -> String {
        match self {
            Refusal::Nul => {
                "a string contains \\u0000, which PostgreSQL jsonb cannot store".to_owned()
            }
            Refusal::LoneSurrogate => "a string contains an escaped UTF-16 surrogate without its pair (e.g. \\ud800), which is not a character; PostgreSQL jsonb refuses it".to_owned(),
            Refusal::TooDeep => format!(
                "arrays and objects are nested more than {MAX_DEPTH} levels deep; PostgreSQL jsonb refuses deep documents"
            ),
            Refusal::NumberOutOfRange => format!(
                "a number has more than {MAX_WEIGHT_DIGITS} digits before the decimal point or {MAX_SCALE} after it, which PostgreSQL numeric cannot hold"
            ),
        }
    }
}

/// Checks JSON text (already known to be valid JSON) for what `jsonb` refuses.
pub fn check(json: &[u8]) -> Result<(), Refusal> {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = json.get(i) {
        match b {
            b'"' => i = string(json, i + 1)?,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Refusal::TooDeep);
                }
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'-' | b'0'..=b'9' => i = number(json, i)?,
            _ => i += 1,
        }
    }
    Ok(())
}

/// Scans a string whose opening quote is just before `i`; returns the index
/// after its closing quote.
fn string(json: &[u8], mut i: usize) -> Result<usize, Refusal> {
    loop {
        match memchr::memchr2(b'"', b'\\', json.get(i..).unwrap_or_default()) {
            None => return Ok(json.len()),
            Some(n) => i += n,
        }
        if json[i] == b'"' {
            return Ok(i + 1);
        }
        // A backslash: what follows it is one escape.
        match json.get(i + 1) {
            Some(b'u') => {
                let unit = hex4(json, i + 2);
                i += 6;
                match unit {
                    Some(0) => return Err(Refusal::Nul),
                    Some(0xD800..=0xDBFF) => {
                        let low = (json.get(i) == Some(&b'\\') && json.get(i + 1) == Some(&b'u'))
                            .then(|| hex4(json, i + 2))
                            .flatten();
                        if !matches!(low, Some(0xDC00..=0xDFFF)) {
                            return Err(Refusal::LoneSurrogate);
                        }
                        i += 6;
                    }
                    Some(0xDC00..=0xDFFF) => return Err(Refusal::LoneSurrogate),
                    _ => {}
                }
            }
            _ => i += 2,
        }
    }
}

fn hex4(json: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(json.get(at..at + 4)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

/// Scans a number starting at `i`; returns the index after it.
fn number(json: &[u8], mut i: usize) -> Result<usize, Refusal> {
    let digits_from = |json: &[u8], i: usize| {
        json.get(i..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    if json.get(i) == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    i += digits_from(json, i);
    let int_part = &json[int_start..i];
    let mut frac_part: &[u8] = &[];
    if json.get(i) == Some(&b'.') {
        let n = digits_from(json, i + 1);
        frac_part = &json[i + 1..i + 1 + n];
        i += 1 + n;
    }
    let mut exp: i64 = 0;
    if matches!(json.get(i), Some(b'e' | b'E')) {
        i += 1;
        let negative = json.get(i) == Some(&b'-');
        if matches!(json.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let n = digits_from(json, i);
        for d in &json[i..i + n] {
            exp = exp.saturating_mul(10).saturating_add(i64::from(d - b'0'));
        }
        if negative {
            exp = -exp;
        }
        i += n;
    }
    // Digits before the point, counted from the first significant one: 0.01e5
    // is 1e3. Zero has none, whatever its exponent.
    let significant_int = int_part.iter().skip_while(|b| **b == b'0').count();
    let leading_frac_zeros = frac_part.iter().take_while(|b| **b == b'0').count();
    let zero = significant_int == 0 && leading_frac_zeros == frac_part.len();
    let weight = if significant_int > 0 {
        exp.saturating_add(significant_int as i64)
    } else {
        exp.saturating_sub(leading_frac_zeros as i64)
    };
    let scale = (frac_part.len() as i64).saturating_sub(exp);
    if (!zero && weight > MAX_WEIGHT_DIGITS) || scale > MAX_SCALE {
        return Err(Refusal::NumberOutOfRange);
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_records_pass() {
        for ok in [
            &br#"{"url":"http://a/","n":[1,2.5,-3e10,0.001],"s":"\u00e9\ud83d\ude00\\u0000"}"#[..],
            br#"{"a":{"b":{"c":[[[]]]}},"e":"\"\\"}"#,
            br#"{"big":1e131000,"small":1e-16000,"zeros":0.0000}"#,
        ] {
            assert_eq!(check(ok), Ok(()), "{}", String::from_utf8_lossy(ok));
        }
    }

    #[test]
    fn nul_escapes_in_strings_and_keys_are_refused() {
        assert_eq!(check(br#"{"u":"a\u0000"}"#), Err(Refusal::Nul));
        assert_eq!(check(br#"{"k\u0000":1}"#), Err(Refusal::Nul));
    }

    #[test]
    fn surrogates_without_their_pair_are_refused() {
        for bad in [
            &br#"{"s":"\ud800"}"#[..],
            br#"{"s":"\ud800x"}"#,
            br#"{"s":"\ud800\u0041"}"#,
            br#"{"s":"\udc00"}"#,
            br#"{"\uDBFF":1}"#,
        ] {
            assert_eq!(
                check(bad),
                Err(Refusal::LoneSurrogate),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn nesting_past_the_limit_is_refused_and_up_to_it_passes() {
        let nest = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        assert_eq!(check(nest(MAX_DEPTH - 1).as_bytes()), Ok(()));
        assert_eq!(check(nest(MAX_DEPTH).as_bytes()), Err(Refusal::TooDeep));
        assert_eq!(check(nest(20_000).as_bytes()), Err(Refusal::TooDeep));
    }

    #[test]
    fn numbers_numeric_cannot_hold_are_refused() {
        assert_eq!(check(b"{\"n\":1e200000}"), Err(Refusal::NumberOutOfRange));
        assert_eq!(check(b"{\"n\":1e-20000}"), Err(Refusal::NumberOutOfRange));
        assert_eq!(
            check(b"{\"n\":-1e99999999999999999999999999}"),
            Err(Refusal::NumberOutOfRange)
        );
        let long = format!("{{\"n\":{}}}", "9".repeat(140_000));
        assert_eq!(check(long.as_bytes()), Err(Refusal::NumberOutOfRange));
    }

    #[test]
    fn numbers_are_judged_by_their_significant_digits_as_postgresql_does() {
        // Each pair checked against `SELECT '<n>'::jsonb` in psql.
        for ok in [
            "0e99999999",
            "0.01e131073",
            "1e131071",
            "-0",
            "1E+5",
            "-0.0e-5",
        ] {
            let rec = format!("{{\"n\":{ok}}}");
            assert_eq!(check(rec.as_bytes()), Ok(()), "{ok}");
        }
        for bad in ["1e131072", "0e-16384", "1.5e-16383", "1.0e-16383"] {
            let rec = format!("{{\"n\":{bad}}}");
            assert_eq!(
                check(rec.as_bytes()),
                Err(Refusal::NumberOutOfRange),
                "{bad}"
            );
        }
    }

    #[test]
    fn brackets_and_escapes_inside_strings_do_not_count() {
        let s = format!("{{\"s\":\"{}\\\"\"}}", "[".repeat(1000));
        assert_eq!(check(s.as_bytes()), Ok(()));
    }
}
