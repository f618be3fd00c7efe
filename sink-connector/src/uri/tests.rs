//! Unit tests of `postgres_uri` parsing and TLS set-up.

use super::*;
use connector_common::secret::percent_decoded;

#[test]
fn url_sslmodes_map_like_libpq() {
    let t = PgTarget::parse("postgres://u@h:5433/db").unwrap();
    assert_eq!(t.config.get_ssl_mode(), SslMode::Prefer);
    assert_eq!(t.verify, Verify::None);
    let t = PgTarget::parse("postgres://u@h/db?sslmode=require").unwrap();
    assert_eq!(
        (t.config.get_ssl_mode(), t.verify),
        (SslMode::Require, Verify::None)
    );
    let t =
        PgTarget::parse("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/a%20b/ca.pem").unwrap();
    assert_eq!(
        (t.config.get_ssl_mode(), t.verify),
        (SslMode::Require, Verify::Ca)
    );
    assert_eq!(t.root_cert.as_deref(), Some("/a b/ca.pem"));
    let t = PgTarget::parse(
        "postgresql://u@h/db?sslrootcert=ca.pem&sslmode=verify-full&application_name=x",
    )
    .unwrap();
    assert_eq!(t.verify, Verify::Full);
    assert_eq!(t.config.get_application_name(), Some("x"));
    let t = PgTarget::parse("postgres://u@h/db?sslmode=require&sslrootcert=ca.pem").unwrap();
    assert_eq!(
        t.verify,
        Verify::Ca,
        "require + root cert behaves as verify-ca in libpq"
    );
    let t = PgTarget::parse("postgres://u@h/db?sslmode=disable").unwrap();
    assert_eq!(t.config.get_ssl_mode(), SslMode::Disable);
}

#[test]
fn key_value_form_is_understood() {
    let t = PgTarget::parse(
        "host=h port=5433 dbname='my db' sslmode = verify-full sslrootcert='/x y/ca.pem'",
    )
    .unwrap();
    assert_eq!(t.verify, Verify::Full);
    assert_eq!(t.root_cert.as_deref(), Some("/x y/ca.pem"));
    assert_eq!(t.config.get_dbname(), Some("my db"));
    assert_eq!(t.config.get_ports(), &[5433]);
}

#[test]
fn bad_strings_are_refused() {
    assert!(matches!(
        PgTarget::parse("postgres://h/db?sslmode=maybe"),
        Err(UriError::SslMode(_))
    ));
    assert!(matches!(
        PgTarget::parse("postgres://h/db?sslcert=c.pem"),
        Err(UriError::Unsupported(_))
    ));
    assert!(matches!(
        PgTarget::parse("postgres://h/db?port=x"),
        Err(UriError::Parse(_))
    ));
    assert!(matches!(
        PgTarget::parse("host=h dbname='open"),
        Err(UriError::UnclosedQuote(Key::Known("dbname")))
    ));
    assert!(matches!(
        PgTarget::parse("host=h sslmode"),
        Err(UriError::NoEquals(Key::Known("sslmode")))
    ));
    assert!(matches!(PgTarget::parse("host=h =x"), Err(UriError::NoKey)));
    assert!(matches!(
        PgTarget::parse("host=h colour=blue"),
        Err(UriError::UnknownKey(Key::Other(6)))
    ));
    assert!(matches!(
        PgTarget::parse("postgres://h/db?passfile=x"),
        Err(UriError::UnknownKey(Key::Known("passfile")))
    ));
    assert!(matches!(
        PgTarget::parse("postgres://h/db?sslmode"),
        Err(UriError::UrlNoEquals(Key::Known("sslmode")))
    ));
}

#[test]
fn url_scheme_is_read_in_any_case() {
    let t = PgTarget::parse("POSTGRES://u:pw@h:5433/db?sslmode=require").unwrap();
    assert_eq!(t.config.get_ports(), &[5433]);
    assert_eq!(t.config.get_user(), Some("u"));
    assert_eq!(t.config.get_password(), Some(&b"pw"[..]));
    assert_eq!(t.verify, Verify::None);
    let t = PgTarget::parse("PostgreSQL://h/db?sslmode=verify-full&sslrootcert=ca.pem").unwrap();
    assert_eq!(t.verify, Verify::Full);
    assert_eq!(t.config.get_dbname(), Some("db"));
}

#[test]
fn sslmode_errors_hint_without_quoting_the_value() {
    for (uri, hint) in [
        ("postgres://h/db?sslmode=Require", "lower case"),
        ("postgres://h/db?sslmode=verify_full", "not `_`"),
        ("host=h sslmode=''", "empty"),
    ] {
        let e = PgTarget::parse(uri).unwrap_err().to_string();
        assert!(e.contains(hint), "{uri}: {e}");
        assert!(!e.contains("Require") && !e.contains("verify_full"), "{e}");
    }
}

/// Every window of 4 or more characters of `marker`.
fn pieces(marker: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for len in 4..=marker.len() {
        for start in 0..=marker.len() - len {
            out.push(&marker[start..start + len]);
        }
    }
    out
}

#[test]
fn no_error_shows_any_part_of_a_password() {
    const MARKER: &str = "SECRETPW";
    let bad = [
        // key=value form, password quoted and unclosed.
        "host=127.0.0.1 password='SECRETPW dbname=x",
        // ... with an escaped quote that leaves it open.
        "host=h password = 'SECRETPW\\' dbname=x",
        // Unquoted password with a space in it: the rest is a key without `=`.
        "host=h password=SECR ETPW",
        // ... and a key that is no parameter.
        "host=h password=SECR ETPW=1",
        // The password taken as a key.
        "host=h SECRETPW",
        "host=h =SECRETPW",
        // The password where sslmode's value should be (libpq skips the
        // space after `=`).
        "host=h sslmode= password=SECRETPW",
        "host=h password=SECRETPW sslmode=verify_fulll",
        "host=h password=SECRETPW port=x",
        "host=h password=SECRETPW sslkey=k.pem",
        // URL userinfo, upper-case scheme (once read as key=value).
        "POSTGRES://u:SECRETPW@127.0.0.1/db?sslmode",
        "POSTGRES://u:SECRETPW@127.0.0.1/db?sslmode=bogus",
        "postgresql://u:SECRETPW@127.0.0.1:port/db",
        "postgres://u:SECRETPW@[::1/db",
        // `?`, `&` in an unencoded URL password.
        "postgres://u:SEC?RETPW@h/db",
        "postgres://u:ab?SECRETPW=1@h/db",
        "postgres://u:SECR?ETPW&x@h/db",
        "postgres://h/db?password=SECR&ETPW",
        "postgres://h/db?sslmode=require&SECRETPW",
        // Percent-encoded (P = %50), in userinfo and as a parameter.
        "postgres://u:SECRET%50W@h/db?sslmode=nope",
        "postgres://h/db?password=SECRET%50W&sslmode=SECRET%50W",
        "postgres://h/db?password=SECRET%50W&SECRET%50W",
        "postgres://h/db?SECRET%50W=1",
        "postgres://u:SECRET%50W@h:%FF/db",
    ];
    let pieces = pieces(MARKER);
    for uri in bad {
        let err = match PgTarget::parse(uri) {
            Ok(_) => panic!("{uri} parsed"),
            Err(e) => e,
        };
        let shown = format!("{err}");
        let debug = format!("{err:?}");
        for text in [&shown, &debug] {
            for piece in &pieces {
                assert!(
                    !text.contains(piece),
                    "the error for {uri} shows {piece}: {text}"
                );
            }
        }
        // And the message the configuration gives for it.
        let message = uri.parse::<PostgresUri>().expect_err("refused");
        for piece in &pieces {
            assert!(!message.contains(piece), "{uri}: {message}");
        }
    }
}

#[test]
fn verify_without_root_cert_file_is_a_clear_error() {
    let t = PgTarget::parse("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
        .unwrap();
    let e = t.tls().err().expect("missing file is an error").to_string();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
}

#[test]
fn keepalives_and_user_timeout_default_short_but_the_uri_wins() {
    let t = PgTarget::parse("postgres://u@h/db").unwrap();
    assert!(t.config.get_keepalives());
    assert_eq!(
        t.config.get_keepalives_idle(),
        std::time::Duration::from_secs(30)
    );
    assert_eq!(
        t.config.get_tcp_user_timeout(),
        Some(&std::time::Duration::from_secs(60))
    );
    let t = PgTarget::parse("host=h keepalives_idle=99 tcp_user_timeout=7").unwrap();
    assert_eq!(
        t.config.get_keepalives_idle(),
        std::time::Duration::from_secs(99)
    );
    assert_eq!(
        t.config.get_tcp_user_timeout(),
        Some(&std::time::Duration::from_secs(7))
    );
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decoded("a%2Fb%20c"), "a/b c");
    assert_eq!(percent_decoded("100%"), "100%");
}
