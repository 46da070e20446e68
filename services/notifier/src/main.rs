use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    platform::bootstrap::run_main(notifier::SERVICE, notifier::Config::from_env, notifier::run)
        .await
}
