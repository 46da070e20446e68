use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    platform::bootstrap::run_main(worker::SERVICE, worker::Config::from_env, worker::run).await
}
