#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn dev_login_is_refused_in_production_and_lists_are_checked() {
    let error = Config::read(EnvReader::from_map([
        ("ENVIRONMENT", "production"),
        ("AUTH_DEV_LOGIN", "true"),
        ("TRUSTED_PROXIES", "10.0.0.0/8, nonsense"),
        ("ALLOWED_ORIGINS", "https://app.example.com,ftp://x"),
        ("GOOGLE_CLIENT_ID", "id"),
    ]))
    .unwrap_err();
    assert!(error.names("AUTH_DEV_LOGIN"));
    assert!(error.names("TRUSTED_PROXIES"));
    assert!(error.names("ALLOWED_ORIGINS"));
    assert!(error.names("GOOGLE_CLIENT_SECRET"));
    assert!(error.names("S3_ACCESS_KEY_ID"));
}

/// Issue 15: `GOOGLE_TOKEN_URL` accepted `http://` in production.
#[test]
fn google_urls_must_be_https_outside_development() {
    let http_urls = [
        ("GOOGLE_CLIENT_ID", "id"),
        ("GOOGLE_CLIENT_SECRET", "secret"),
        ("GOOGLE_AUTH_URL", "http://idp.example/auth"),
        ("GOOGLE_TOKEN_URL", "http://idp.example/token"),
        ("GOOGLE_JWKS_URL", "http://idp.example/certs"),
    ];
    let mut production = vec![("ENVIRONMENT", "production")];
    production.extend(http_urls);
    let error = Config::read(EnvReader::from_map(production)).unwrap_err();
    for name in ["GOOGLE_AUTH_URL", "GOOGLE_TOKEN_URL", "GOOGLE_JWKS_URL"] {
        assert!(error.names(name), "{name}: {error}");
    }
    let development = Config::read(EnvReader::from_map(http_urls)).unwrap();
    let google = development.google.unwrap();
    assert_eq!(google.jwks_url.as_str(), "http://idp.example/certs");
}

#[test]
fn the_google_http_timeout_is_bounded() {
    let google = [
        ("GOOGLE_CLIENT_ID", "id"),
        ("GOOGLE_CLIENT_SECRET", "secret"),
    ];
    let default = Config::read(EnvReader::from_map(google)).unwrap();
    assert_eq!(
        default.google.unwrap().http_timeout,
        Duration::from_secs(10)
    );
    let mut three = google.to_vec();
    three.push(("GOOGLE_HTTP_TIMEOUT_SECONDS", "3"));
    let three = Config::read(EnvReader::from_map(three)).unwrap();
    assert_eq!(three.google.unwrap().http_timeout, Duration::from_secs(3));
    for bad in ["0", "61", "-1", "ten"] {
        let mut env = google.to_vec();
        env.push(("GOOGLE_HTTP_TIMEOUT_SECONDS", bad));
        let error = Config::read(EnvReader::from_map(env)).unwrap_err();
        assert!(error.names("GOOGLE_HTTP_TIMEOUT_SECONDS"), "{bad}: {error}");
    }
}

#[test]
fn cdn_limits_are_checked() {
    let error = Config::read(EnvReader::from_map([
        ("CDN_MAX_UPLOAD_BYTES", "0"),
        ("CDN_UPLOAD_URL_TTL_SECONDS", "604801"),
        ("CDN_DOWNLOAD_URL_TTL_SECONDS", "0"),
    ]))
    .unwrap_err();
    assert!(error.names("CDN_MAX_UPLOAD_BYTES"), "{error}");
    assert!(error.names("CDN_UPLOAD_URL_TTL_SECONDS"), "{error}");
    assert!(error.names("CDN_DOWNLOAD_URL_TTL_SECONDS"), "{error}");
    let error = Config::read(EnvReader::from_map([
        ("CDN_UPLOAD_URL_TTL_SECONDS", "600"),
        ("CDN_ABANDONED_UPLOAD_SECONDS", "300"),
    ]))
    .unwrap_err();
    assert!(error.names("CDN_ABANDONED_UPLOAD_SECONDS"), "{error}");
    let config = Config::read(EnvReader::from_map([("S3_BUCKET", "files")])).unwrap();
    assert_eq!(config.cdn.max_upload_bytes, 26_214_400);
    assert_eq!(config.cdn.upload_url_ttl, Duration::from_secs(900));
    assert_eq!(config.s3.bucket, "files");
}

#[test]
fn the_sync_token_secret_is_checked() {
    let short = Config::read(EnvReader::from_map([("SYNC_TOKEN_SECRET", "short")])).unwrap_err();
    assert!(short.names("SYNC_TOKEN_SECRET"));
    assert!(
        !short.to_string().contains("short"),
        "the secret is not echoed"
    );
    let default_in_production = Config::read(EnvReader::from_map([
        ("ENVIRONMENT", "production"),
        ("SESSION_COOKIE_SECURE", "true"),
    ]))
    .unwrap_err();
    assert!(default_in_production.names("SYNC_TOKEN_SECRET"));
}

#[test]
fn the_session_cache_settings_are_checked() {
    let default = Config::read(EnvReader::from_map([("PORT", "8080")])).unwrap();
    assert_eq!(default.session_cache.ttl, Duration::from_secs(30));
    assert_eq!(default.session_cache.capacity, 100_000);
    let off = Config::read(EnvReader::from_map([("SESSION_CACHE_TTL_SECONDS", "0")])).unwrap();
    assert!(off.session_cache.ttl.is_zero());
    for (name, bad) in [
        ("SESSION_CACHE_TTL_SECONDS", "3601"),
        ("SESSION_CACHE_TTL_SECONDS", "-1"),
        ("SESSION_CACHE_TTL_SECONDS", "soon"),
        ("SESSION_CACHE_CAPACITY", "0"),
    ] {
        let error = Config::read(EnvReader::from_map([(name, bad)])).unwrap_err();
        assert!(error.names(name), "{name}={bad}: {error}");
    }
}

#[test]
fn defaults_suit_development() {
    let config = Config::read(EnvReader::from_map([("TRUSTED_PROXIES", "10.0.0.1")])).unwrap();
    assert!(!config.session_cookie_secure);
    assert!(config.google.is_none());
    assert_eq!(
        config.allowed_origins,
        vec!["http://localhost:3000", "http://localhost:8080"]
    );
    assert_eq!(config.trusted_proxies[0].to_string(), "10.0.0.1/32");
}
