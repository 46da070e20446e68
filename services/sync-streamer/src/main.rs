use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(code) = bus::dead_letter::admin_main(sync_streamer::SCHEMA).await {
        return code;
    }
    platform::bootstrap::run_main(
        sync_streamer::SERVICE,
        sync_streamer::Config::from_env,
        sync_streamer::run,
    )
    .await
}
