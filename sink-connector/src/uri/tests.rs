//! Unit tests of `postgres_uri` parsing and TLS set-up.

use super::*;

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
    assert!(PgTarget::parse("host=h dbname='open").is_err());
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
