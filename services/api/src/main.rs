use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    bus::service::main(api::SERVICE, api::SCHEMA, api::Config::from_env, api::run).await
}
