//! `vrrpd --config FILE [--node NAME] [--run-dir DIR]`: parse flags, set up logging, load
//! the cluster file and hand over to [`vrrpd::daemon::run`]. SIGTERM / SIGINT start the
//! graceful handover; SIGHUP (handled by the daemon) reloads.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

/// VRRPv3 for the k3s-ha cluster's VIP.
#[derive(Debug, Parser)]
#[command(name = "vrrpd", version, about)]
struct Args {
    /// The cluster file.
    #[arg(long, default_value = common::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Which node this is (default: by host name, else by a local address).
    #[arg(long)]
    node: Option<String>,
    /// Directory of the control sockets (vrrpd.sock; lbd.sock is read from here too).
    #[arg(long, default_value = common::DEFAULT_RUN_DIR)]
    run_dir: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match real_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("vrrpd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    let cluster = common::config::load(&args.config)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("loading {}", args.config.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        let opts = vrrpd::daemon::Options {
            node: args.node,
            run_dir: args.run_dir,
        };
        vrrpd::daemon::run(cluster, opts, shutdown).await
    })
}
