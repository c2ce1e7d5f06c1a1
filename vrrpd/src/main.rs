//! `vrrpd --config FILE [--node NAME] [--run-dir DIR]`: parse flags, set up logging, load
//! the cluster file and hand over to [`vrrpd::daemon::run`]. SIGTERM / SIGINT start the
//! graceful handover; SIGHUP (handled by the daemon) reloads.

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
    /// Where `lbctl maintenance on` is kept across restarts and reboots. Default:
    /// /var/lib/k3s-ha with the default run directory; with another run directory (a lab
    /// node, a test), that run directory.
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let sink = common::logging::init("vrrpd");
    match real_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: a plain line on a terminal or in a pipe, a priority-3 entry in the
            // journal.
            match sink {
                common::logging::Sink::Stderr { .. } => eprintln!("vrrpd: {e:#}"),
                _ => tracing::error!("{e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    // The error names the file, line and key itself ("F:8:1: key: ..."): no context.
    let cluster = common::config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
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
            state_dir: args
                .state_dir
                .unwrap_or_else(|| common::default_state_dir(&args.run_dir)),
            run_dir: args.run_dir,
        };
        vrrpd::daemon::run(cluster, opts, shutdown).await
    })
}
