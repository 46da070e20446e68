//! How the relay runs: as in production, or a diagnostic set-up.

use std::time::Duration;

use anyhow::Context as _;

/// How the relay runs. [`RelaySetup::PRODUCTION`] is what the services do; the others are
/// diagnostics for finding where the time goes (`BENCH_EVENTS_RELAY`, see `events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySetup {
    /// Give the relay a pool of its own of this size instead of the service pool.
    pub own_pool: Option<u32>,
    /// Ignore the in-process wake-ups and let the relay poll at this interval.
    pub poll_only: Option<Duration>,
}

impl RelaySetup {
    pub const PRODUCTION: Self = Self {
        own_pool: None,
        poll_only: None,
    };

    /// `production`, or a comma-separated list of `own-pool=<connections>` and
    /// `poll=<milliseconds>` (the latter turns the in-process wake-ups off).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut setup = Self::PRODUCTION;
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            match part.split_once('=') {
                None if part == "production" => {}
                Some(("own-pool", size)) => {
                    let size: u32 = size.parse().context("own-pool=<connections>")?;
                    anyhow::ensure!(size > 0, "own-pool needs at least 1 connection");
                    setup.own_pool = Some(size);
                }
                Some(("poll", millis)) => {
                    let millis: f64 = millis.parse().context("poll=<milliseconds>")?;
                    anyhow::ensure!(
                        millis.is_finite() && millis > 0.0 && millis <= 60_000.0,
                        "poll must be between 0 and 60000 ms"
                    );
                    setup.poll_only = Some(Duration::from_secs_f64(millis / 1000.0));
                }
                _ => anyhow::bail!(
                    "unknown relay set-up `{part}` (production, own-pool=<n>, poll=<ms>)"
                ),
            }
        }
        Ok(setup)
    }
}

impl std::fmt::Display for RelaySetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(size) = self.own_pool {
            parts.push(format!("relay on its own pool of {size}"));
        }
        if let Some(interval) = self.poll_only {
            parts.push(format!(
                "no wake-ups, relay polls every {} ms",
                interval.as_secs_f64() * 1000.0
            ));
        }
        if parts.is_empty() {
            f.write_str("production")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_setup_parses() -> anyhow::Result<()> {
        assert_eq!(RelaySetup::parse("production")?, RelaySetup::PRODUCTION);
        assert_eq!(RelaySetup::parse("")?, RelaySetup::PRODUCTION);
        let setup = RelaySetup::parse("own-pool=2, poll=5")?;
        assert_eq!(setup.own_pool, Some(2));
        assert_eq!(setup.poll_only, Some(Duration::from_millis(5)));
        assert!(RelaySetup::parse("poll=0").is_err());
        assert!(RelaySetup::parse("own-pool=0").is_err());
        assert!(RelaySetup::parse("fast").is_err());
        Ok(())
    }
}
