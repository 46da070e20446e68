use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    bus::service::main(cron::SERVICE, cron::SCHEMA, cron::run).await
}
