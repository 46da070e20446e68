use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(code) = bus::dead_letter::admin_main(cron::SCHEMA).await {
        return code;
    }
    platform::bootstrap::run_main(cron::SERVICE, cron::Config::from_env, cron::run).await
}
