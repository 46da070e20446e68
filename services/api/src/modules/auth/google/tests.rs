#![allow(clippy::unwrap_used)]

use super::*;
use crate::modules::auth::google::id_token::IdTokenClaims;

fn config() -> GoogleConfig {
    GoogleConfig {
        client_id: "client-1".into(),
        client_secret: secrecy::SecretString::from("secret".to_owned()),
        auth_url: Url::parse("https://idp.test/auth").unwrap(),
        token_url: Url::parse("https://idp.test/token").unwrap(),
        jwks_url: Url::parse("https://idp.test/certs").unwrap(),
        issuer: "https://accounts.google.com".into(),
        redirect_url: Url::parse("http://localhost:8080/auth/google/callback").unwrap(),
        http_timeout: GoogleConfig::DEFAULT_HTTP_TIMEOUT,
    }
}

fn claims(overrides: serde_json::Value) -> IdTokenClaims {
    let mut claims = serde_json::json!({
        "iss": "https://accounts.google.com", "aud": "client-1", "sub": "123",
        "exp": 2_000_000_000_i64, "iat": 1_899_999_900_i64, "nonce": "n-1",
        "email": "a@example.com", "email_verified": true,
    });
    for (key, value) in overrides.as_object().unwrap() {
        claims[key] = value.clone();
    }
    serde_json::from_value(claims).unwrap()
}

#[test]
fn id_token_claims_are_checked() {
    let now = chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap();
    let ok = claims(serde_json::json!({}));
    check_claims(&ok, &config(), "n-1", now).unwrap();
    assert!(ok.email_verified());
    // Google's bare issuer form and an audience list naming us as `azp` are accepted.
    check_claims(
        &claims(serde_json::json!({
            "iss": "accounts.google.com", "aud": ["x", "client-1"], "azp": "client-1",
        })),
        &config(),
        "n-1",
        now,
    )
    .unwrap();
    for (bad, why) in [
        (serde_json::json!({"iss": "https://evil.test"}), "issuer"),
        (serde_json::json!({"aud": "other-client"}), "audience"),
        (serde_json::json!({"azp": "other-client"}), "azp"),
        (serde_json::json!({"aud": ["x", "client-1"]}), "azp"),
        (serde_json::json!({"exp": 1_800_000_000_i64}), "expired"),
        (serde_json::json!({"iat": null}), "iat"),
        (serde_json::json!({"iat": 1_900_000_500_i64}), "future"),
        (
            serde_json::json!({"iat": 1_899_990_000_i64}),
            "too long ago",
        ),
        (serde_json::json!({"nonce": "replayed"}), "nonce"),
    ] {
        let error = check_claims(&claims(bad), &config(), "n-1", now).unwrap_err();
        assert!(error.detail.contains(why), "{why}: {}", error.detail);
    }
}
