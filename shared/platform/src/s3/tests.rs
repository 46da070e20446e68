#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn bucket_names_follow_s3_rules() {
    assert!(check_bucket_name("journal").is_ok());
    assert!(check_bucket_name("t-0123abcd.exports").is_ok());
    assert!(check_bucket_name("ab").is_err());
    assert!(check_bucket_name("Journal").is_err());
    assert!(check_bucket_name("-journal").is_err());
    assert!(check_bucket_name("journal_exports").is_err());
}

#[test]
fn production_needs_credentials_and_secrets_stay_out_of_errors() {
    let mut env = EnvReader::from_map([("S3_ENDPOINT", "minio:9000"), ("S3_BUCKET", "B")]);
    let _ = S3Config::read(&mut env, true);
    let error = env.finish().unwrap_err();
    assert!(error.names("S3_ENDPOINT"));
    assert!(error.names("S3_BUCKET"));
    assert!(error.names("S3_ACCESS_KEY_ID"));
    assert!(error.names("S3_SECRET_ACCESS_KEY"));

    let mut env = EnvReader::from_map([("S3_SECRET_ACCESS_KEY", "hunter2")]);
    let config = S3Config::read(&mut env, false);
    env.finish().unwrap();
    assert_eq!(config.public_endpoint, DEFAULT_ENDPOINT);
    assert!(!format!("{config:?}").contains("hunter2"));
}
