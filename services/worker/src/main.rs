use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(code) = bus::dead_letter::admin_main(worker::SCHEMA).await {
        return code;
    }
    platform::bootstrap::run_main(worker::SERVICE, worker::Config::from_env, worker::run).await
}
