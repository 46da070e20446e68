use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(code) = bus::dead_letter::admin_main(api::SCHEMA).await {
        return code;
    }
    platform::bootstrap::run_main(api::SERVICE, api::Config::from_env, api::run).await
}
