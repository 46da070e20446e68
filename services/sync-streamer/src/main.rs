use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    platform::bootstrap::run_main(
        sync_streamer::SERVICE,
        sync_streamer::Config::from_env,
        sync_streamer::run,
    )
    .await
}
