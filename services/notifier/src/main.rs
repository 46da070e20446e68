use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    bus::service::main(notifier::SERVICE, notifier::SCHEMA, notifier::run).await
}
