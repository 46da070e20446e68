use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(code) = bus::dead_letter::admin_main(notifier::SCHEMA).await {
        return code;
    }
    platform::bootstrap::run_main(notifier::SERVICE, notifier::Config::from_env, notifier::run)
        .await
}
