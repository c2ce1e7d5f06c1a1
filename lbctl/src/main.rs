//! lbctl: the operator CLI. Thin: parse flags, call the library, print errors plainly.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lbctl",
    version,
    about = "Operate k3s-ha: vrrpd (the VIP) and lbd (the proxy)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Work with cluster.toml.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a cluster file and print, per node, what it will run.
    Check {
        /// The cluster file.
        #[arg(default_value = common::DEFAULT_CONFIG)]
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Config {
            cmd: ConfigCmd::Check { file, json },
        } => match common::config::load(&file) {
            Ok(cluster) => {
                if json {
                    println!("{:#}", lbctl::check::render_json(&cluster));
                } else {
                    print!("{}", lbctl::check::render_text(&cluster));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                if json {
                    println!(
                        "{:#}",
                        serde_json::json!({ "valid": false, "error": e.to_string(), "file": e.file, "line": e.line, "column": e.column, "key": e.key })
                    );
                } else {
                    eprintln!("error: {e}");
                }
                ExitCode::FAILURE
            }
        },
    }
}
