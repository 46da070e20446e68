use super::*;

#[test]
fn every_bad_variable_is_named() {
    let mut env = EnvReader::from_map([("PORT", "eighty"), ("LOG_FORMAT", "xml")]);
    let _ = CommonConfig::read(&mut env);
    let _ = read_port(&mut env, 8080);
    let _: Option<String> = env.required("SOMETHING_REQUIRED");
    let error = env.finish().unwrap_err();
    assert!(error.names("PORT"));
    assert!(error.names("LOG_FORMAT"));
    assert!(error.names("SOMETHING_REQUIRED"));
    assert!(!error.names("NATS_URL"));
    let message = error.to_string();
    assert!(message.contains("PORT: `eighty` is invalid"), "{message}");
}

#[test]
fn secret_values_are_not_echoed() {
    let mut env = EnvReader::from_map([
        ("DATABASE_MAX_CONNECTIONS", "x"),
        ("API_KEY_COUNT", "hunter2"),
    ]);
    let _: Option<u32> = env.optional("API_KEY_COUNT");
    let message = env.finish().unwrap_err().to_string();
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("<redacted>"), "{message}");
}

#[test]
fn defaults_apply_when_unset_or_empty() {
    let mut env = EnvReader::from_map([("NATS_URL", "  ")]);
    let common = CommonConfig::read(&mut env);
    env.finish().unwrap();
    assert_eq!(common.nats_url, DEFAULT_NATS_URL);
    assert_eq!(common.log_format, LogFormat::Pretty);
    assert_eq!(common.streams, StreamSettings::default());
    assert!(common.nats_auth.is_none());
}

#[test]
fn stream_settings_are_read_and_checked() {
    let mut env = EnvReader::from_map([
        ("NATS_STREAM_REPLICAS", "3"),
        ("NATS_STREAM_STORAGE", "Memory"),
    ]);
    let common = CommonConfig::read(&mut env);
    env.finish().unwrap();
    assert_eq!(
        common.streams,
        StreamSettings {
            replicas: 3,
            storage: StreamStorage::Memory
        }
    );

    for (replicas, expected) in [
        ("0", "`0` is out of range: 1 to 5"),
        ("7", "`7` is out of range: 1 to 5"),
        ("three", "`three` is invalid"),
    ] {
        let mut env = EnvReader::from_map([("NATS_STREAM_REPLICAS", replicas)]);
        let _ = CommonConfig::read(&mut env);
        let message = env.finish().unwrap_err().to_string();
        assert!(
            message.contains(&format!("NATS_STREAM_REPLICAS: {expected}")),
            "{message}"
        );
    }
    let mut env = EnvReader::from_map([("NATS_STREAM_STORAGE", "disk")]);
    let _ = CommonConfig::read(&mut env);
    let error = env.finish().unwrap_err();
    assert!(error.names("NATS_STREAM_STORAGE"), "{error}");
}

#[test]
fn nats_user_and_password_come_together_and_the_password_is_never_shown() {
    let mut env = EnvReader::from_map([("NATS_USER", "journal_api"), ("NATS_PASSWORD", "hunter2")]);
    let common = CommonConfig::read(&mut env);
    env.finish().unwrap();
    let auth = common.nats_auth.clone().unwrap();
    assert_eq!(auth.user, "journal_api");
    assert!(!format!("{common:?}").contains("hunter2"));

    let mut env = EnvReader::from_map([("NATS_USER", "journal_api")]);
    let _ = CommonConfig::read(&mut env);
    let error = env.finish().unwrap_err();
    assert!(error.names("NATS_PASSWORD"), "{error}");
    let mut env = EnvReader::from_map([("NATS_PASSWORD", "hunter2")]);
    let _ = CommonConfig::read(&mut env);
    let error = env.finish().unwrap_err();
    assert!(error.names("NATS_USER"), "{error}");
    assert!(!error.to_string().contains("hunter2"));
}

#[test]
fn the_relay_wake_delay_is_read_and_bounded() {
    let mut env = EnvReader::from_map(Vec::<(String, String)>::new());
    let common = CommonConfig::read(&mut env);
    env.finish().unwrap();
    assert_eq!(common.relay_wake_delay, DEFAULT_RELAY_WAKE_DELAY);

    let mut env = EnvReader::from_map([("RELAY_WAKE_DELAY_MS", "5")]);
    let common = CommonConfig::read(&mut env);
    env.finish().unwrap();
    assert_eq!(common.relay_wake_delay, std::time::Duration::from_millis(5));

    for (raw, expected) in [
        (
            "1001",
            "RELAY_WAKE_DELAY_MS: 1001 is above the limit of 1000",
        ),
        ("-1", "RELAY_WAKE_DELAY_MS: `-1` is invalid"),
    ] {
        let mut env = EnvReader::from_map([("RELAY_WAKE_DELAY_MS", raw)]);
        let _ = CommonConfig::read(&mut env);
        let message = env.finish().unwrap_err().to_string();
        assert!(message.contains(expected), "{message}");
    }
}

#[test]
fn the_outbox_kind_defaults_to_the_table_and_names_a_bad_value() {
    let mut env = EnvReader::from_map(Vec::<(String, String)>::new());
    let common = CommonConfig::read(&mut env);
    env.finish().unwrap();
    assert_eq!(common.outbox, OutboxKind::Table);

    let mut env = EnvReader::from_map([("BUS_OUTBOX", "WAL")]);
    let common = CommonConfig::read(&mut env);
    env.finish().unwrap();
    assert_eq!(common.outbox, OutboxKind::Wal);

    let mut env = EnvReader::from_map([("BUS_OUTBOX", "log")]);
    let _ = CommonConfig::read(&mut env);
    let message = env.finish().unwrap_err().to_string();
    assert!(
        message.contains("BUS_OUTBOX") && message.contains("expected `table` or `wal`"),
        "{message}"
    );
}
