//! The `switchboard` binary: `serve` and `check-config`.

use anyhow::Context;

/// mimalloc: a streamed turn allocates many small strings; glibc malloc was a quarter of the server's CPU in
/// the turns benchmark (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "switchboard", version, about = "Realtime gateway for LLM-agent conversations")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// TOML config file (keys as in README; environment SWITCHBOARD_* overrides it).
        #[arg(long)]
        config: Option<String>,
    },
    /// Validate the configuration and print the effective config with secrets redacted.
    CheckConfig {
        #[arg(long)]
        config: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    // One rustls provider for the process, before any HTTP client is built (the OTLP exporter's and MCP's
    // reqwest pick none of their own): ring, as everywhere else.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => {
            let cfg = switchboard::config::Config::load(config.as_deref(), std::env::vars())
                .context("invalid configuration")?;
            let text = toml::to_string_pretty(&cfg.redacted()).context("rendering config")?;
            print!("{text}");
            Ok(())
        }
        Command::Serve { config } => {
            let cfg = switchboard::config::Config::load(config.as_deref(), std::env::vars())
                .context("invalid configuration")?;
            let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok();
            let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| "switchboard".into());
            let telemetry = switchboard::telemetry::init(cfg.log_format, endpoint.as_deref(), &instance);
            let rt =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
            let result = rt.block_on(serve(cfg));
            // After the drain: spans of the last turns are exported before the process exits.
            telemetry.shutdown();
            result
        }
    }
}

async fn serve(cfg: switchboard::config::Config) -> anyhow::Result<()> {
    let running = switchboard::server::start(cfg).await.context("starting switchboard")?;
    let shutdown = async {
        shutdown_signal().await;
        tracing::info!("shutdown signal received");
    };
    running.run_until(shutdown).await.context("server task")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
