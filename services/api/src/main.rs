use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    platform::bootstrap::run_main(api::SERVICE, api::Config::from_env, api::run).await
}
