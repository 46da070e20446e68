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
        let db = crate::db::connect_with_password(
            &common.database_url,
            common.database_password.as_ref(),
            schema,
            common.database_max_connections,
        )
        .await?;
        crate::db::migrate(&db, schema, migrator).await?;
        tracing::info!(schema, "postgres connected and schema migrated");
        let nats =
            crate::nats::connect_with(&common.nats_url, service, common.nats_auth.as_ref()).await?;
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
