use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    bus::service::main(worker::SERVICE, worker::SCHEMA, worker::run).await
}
