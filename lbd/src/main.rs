//! `lbd --config FILE [--node NAME] [--run-dir DIR] [--state-dir DIR]`: the L4 proxy daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc: tokio's task and I/O state are 128-byte aligned, which glibc's malloc serves
/// with a lot of slack; mimalloc's size classes cut lbd's memory per idle connection.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "lbd", version, about = "k3s-ha L4 TCP proxy")]
struct Args {
    /// Cluster file.
    #[arg(long, default_value = common::DEFAULT_CONFIG)]
    config: PathBuf,
    /// This node's name in the cluster file (default: by host name or local address).
    #[arg(long)]
    node: Option<String>,
    /// Directory of the control sockets.
    #[arg(long, default_value = common::DEFAULT_RUN_DIR)]
    run_dir: PathBuf,
    /// Where the cluster's admin states (drain, maintenance, weights) are kept across
    /// restarts. Default: /var/lib/k3s-ha with the default run directory; with another
    /// run directory (a lab node, a test), that run directory.
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let sink = common::logging::init("lbd");
    // `lbd.threads` accept workers, by default one per CPU this process may run on (the
    // affinity mask counts). One runs everything on the main thread's single-threaded
    // scheduler. More: each worker is a thread with its own single-threaded scheduler
    // that accepts from every listener and keeps the connections it accepted (nginx's
    // workers, HAProxy's threads); checks, stats and control stay on the main thread.
    // The file is read again by lbd::run, which reports its errors.
    let threads = common::config::load(&args.config)
        .ok()
        .and_then(|c| c.lbd.threads)
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lbd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let workers = if threads > 1 {
        match accept_workers(threads) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("lbd: cannot start {threads} accept workers: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        Vec::new()
    };
    let state_dir = args
        .state_dir
        .unwrap_or_else(|| common::default_state_dir(&args.run_dir));
    let opts = lbd::Options {
        config: args.config,
        node: args.node,
        run_dir: args.run_dir,
        state_dir,
        exec: lbd::upgrade::Exec::of_this_process(),
        workers,
    };
    let result = rt.block_on(async {
        // The handlers are in place before anything else: a SIGTERM right after an
        // upgrade made this process systemd's main one drains instead of killing.
        use tokio::signal::unix::{signal, SignalKind};
        let signals = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        let shutdown = async {
            match signals {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        };
        lbd::run(opts, shutdown).await
    });
    // Connections still open after the drain are closed with the runtime.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: a plain line on a terminal or in a pipe, a priority-3 entry in the
            // journal.
            match sink {
                common::logging::Sink::Stderr { .. } => eprintln!("lbd: {e:#}"),
                _ => tracing::error!("{e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// `n` threads, each driving its own single-threaded runtime until the process exits (the
/// connections they carry end with it, as the main runtime's do after its drain).
fn accept_workers(n: usize) -> std::io::Result<Vec<tokio::runtime::Handle>> {
    (0..n)
        .map(|i| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name(format!("lbd-worker-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))?;
            Ok(handle)
        })
        .collect()
}
