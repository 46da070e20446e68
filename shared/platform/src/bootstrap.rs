//! What every `main.rs` does: read config, start telemetry, bind the port, wire signals to
//! the shutdown token, run the service, and turn the outcome into an exit code.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{CommonConfig, ConfigError};

/// A service's configuration, as far as start-up needs to know it.
pub trait ServiceConfig {
    fn common(&self) -> &CommonConfig;
    fn listen_addr(&self) -> SocketAddr;
}

/// `impl ServiceConfig` for a service's `Config` laid out as every service's is: the shared
/// variables in a field `common: CommonConfig` and the service's `PORT` in `port: u16`; it
/// listens on `common.host:port`.
#[macro_export]
macro_rules! impl_service_config {
    ($config:ty) => {
        impl $crate::bootstrap::ServiceConfig for $config {
            fn common(&self) -> &$crate::config::CommonConfig {
                &self.common
            }
            fn listen_addr(&self) -> ::std::net::SocketAddr {
                ::std::net::SocketAddr::new(self.common.host, self.port)
            }
        }
    };
}

/// Exit codes: 0 clean stop, 1 the service failed, 2 the configuration is invalid.
pub async fn run_main<C, F, Fut, E>(
    service: &'static str,
    from_env: F,
    run: impl FnOnce(C, TcpListener, CancellationToken) -> Fut,
) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce() -> Result<C, ConfigError>,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let config = match from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{service}: {error}");
            return ExitCode::from(2);
        }
    };
    let common = config.common();
    let _telemetry =
        match crate::telemetry::init(service, common.log_format, common.otel_endpoint.as_deref()) {
            Ok(guard) => guard,
            Err(error) => {
                eprintln!("{service}: {error}");
                return ExitCode::from(1);
            }
        };
    let addr = config.listen_addr();
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%addr, %error, "cannot listen");
            return ExitCode::from(1);
        }
    };
    tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "{service} starting");
    let shutdown = CancellationToken::new();
    crate::shutdown::cancel_on_signal(shutdown.clone());
    match run(config, listener, shutdown).await {
        Ok(()) => {
            tracing::info!("{service} stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "{service} failed");
            ExitCode::from(1)
        }
    }
}
