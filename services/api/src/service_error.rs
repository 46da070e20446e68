//! The service's own error: what can stop it (start-up and serving), each with a stable code
//! for logs and alerts. Requests fail with `http::error::ApiError` instead.

bus::service_error! {
    /// Everything that can stop the service, each with a stable code for logs and alerts.
    pub enum Error {
        #[error("http client: {0}")]
        HttpClient(String) => "HTTP_CLIENT",
        #[error("nats: {0}")]
        Nats(String) => "NATS",
    }
}
