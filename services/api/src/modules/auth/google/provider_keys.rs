//! Google's ID token signing keys (JWKS), fetched with the service's HTTP client and cached.

use super::failure::SignInFailure;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use moka::future::Cache;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// How long the provider's JWKS is trusted before it is fetched again (Google rotates keys
/// over days and publishes new ones well before use; an unknown `kid` refetches at once).
const JWKS_TTL: Duration = Duration::from_secs(3600);

/// The provider's signing keys (JWKS), cached by URL; shared by every sign-in of a replica.
pub struct ProviderKeys {
    pub(crate) sets: Cache<String, Arc<JwkSet>>,
}

impl Default for ProviderKeys {
    fn default() -> Self {
        Self {
            sets: Cache::builder()
                .max_capacity(4)
                .time_to_live(JWKS_TTL)
                .build(),
        }
    }
}

impl ProviderKeys {
    /// The key `kid` from the JWKS at `url`: from the cache, else fetched (single flight);
    /// a `kid` the cached set lacks fetches the set once more (a rotated key).
    pub(crate) async fn key(
        &self,
        http: &reqwest::Client,
        url: &Url,
        timeout: Duration,
        kid: &str,
    ) -> Result<DecodingKey, SignInFailure> {
        let cached = self.sets.get(url.as_str()).await;
        let set = match cached {
            Some(set) if set.find(kid).is_some() => set,
            Some(_) => {
                self.sets.invalidate(url.as_str()).await;
                self.load(http, url, timeout).await?
            }
            None => self.load(http, url, timeout).await?,
        };
        let jwk = set.find(kid).ok_or_else(|| {
            SignInFailure::new("invalid_id_token", format!("no key {kid:?} in the JWKS"))
        })?;
        DecodingKey::from_jwk(jwk)
            .map_err(|error| SignInFailure::new("invalid_id_token", format!("JWKS key: {error}")))
    }

    async fn load(
        &self,
        http: &reqwest::Client,
        url: &Url,
        timeout: Duration,
    ) -> Result<Arc<JwkSet>, SignInFailure> {
        self.sets
            .try_get_with(url.as_str().to_owned(), async {
                let response = http
                    .get(url.clone())
                    .timeout(timeout)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|error| error.to_string())?;
                let set: JwkSet = response.json().await.map_err(|error| error.to_string())?;
                Ok::<_, String>(Arc::new(set))
            })
            .await
            .map_err(|error| SignInFailure::new("provider_error", format!("JWKS: {error}")))
    }
}
