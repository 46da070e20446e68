use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    bus::service::main(
        notifier::SERVICE,
        notifier::SCHEMA,
        notifier::Config::from_env,
        notifier::run,
    )
    .await
}
