use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    platform::bootstrap::run_main(cron::SERVICE, cron::Config::from_env, cron::run).await
}
