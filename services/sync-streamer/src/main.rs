use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    bus::service::main(
        sync_streamer::SERVICE,
        sync_streamer::SCHEMA,
        sync_streamer::run,
    )
    .await
}
