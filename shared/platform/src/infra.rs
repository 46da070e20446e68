//! The connections every service opens at start.

use async_nats::jetstream;
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use crate::PlatformError;
use crate::config::CommonConfig;
use crate::health::Readiness;

/// Postgres (with the service's schema migrated) and NATS with JetStream.
#[derive(Clone)]
pub struct Infra {
    pub db: PgPool,
    pub nats: async_nats::Client,
    pub jetstream: jetstream::Context,
}

impl Infra {
    /// Connect to Postgres, apply `schema`'s migrations, connect to NATS.
    pub async fn start(
        service: &'static str,
        schema: &str,
        common: &CommonConfig,
        migrator: &Migrator,
    ) -> Result<Self, PlatformError> {
        let db = crate::db::connect_and_migrate(
            &common.database_url,
            schema,
            common.database_max_connections,
            migrator,
        )
        .await?;
        tracing::info!(schema, "postgres connected and schema migrated");
        let nats = crate::nats::connect(&common.nats_url, service).await?;
        let jetstream = jetstream::new(nats.clone());
        tracing::info!("nats connected");
        Ok(Self {
            db,
            nats,
            jetstream,
        })
    }

    /// Readiness over this service's Postgres and NATS, both deciding.
    pub fn readiness(&self) -> Readiness {
        Readiness::new(self.db.clone(), self.jetstream.clone())
    }

    /// Readiness where Postgres decides and NATS is only reported (`degraded: …`).
    pub fn readiness_with_nats_reported(&self) -> Readiness {
        Readiness::with_nats_reported(self.db.clone(), self.jetstream.clone())
    }
}
