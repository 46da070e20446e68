//! The service's own error: what can stop it (start-up and serving), each with a stable code
//! for logs and alerts. Requests fail with `http::error::ApiError` instead.

use platform::PlatformError;

/// Everything that can stop the service, each with a stable code for logs and alerts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("bus: {0}")]
    Bus(#[from] bus::BusError),
    #[error("http client: {0}")]
    HttpClient(String),
    #[error("nats: {0}")]
    Nats(String),
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Platform(_) => "PLATFORM",
            Self::Bus(_) => "BUS",
            Self::HttpClient(_) => "HTTP_CLIENT",
            Self::Nats(_) => "NATS",
        }
    }
}
