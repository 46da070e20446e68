use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    bus::service::main(api::SERVICE, api::SCHEMA, api::run).await
}
