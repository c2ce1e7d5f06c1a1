//! lbctl: the operator CLI. Thin: parse flags, call the library, print errors plainly.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use common::proto::lbd::AdminState;
use lbctl::{check, install, ops};

#[derive(Parser)]
#[command(
    name = "lbctl",
    version,
    about = "Operate k3s-ha: vrrpd (the VIP) and lbd (the proxy)"
)]
struct Cli {
    /// Directory holding this node's control sockets (vrrpd.sock, lbd.sock); default
    /// /run/k3s-ha. Not for `lab`: the lab's nodes keep theirs under --state-dir.
    #[arg(long, global = true)]
    run_dir: Option<PathBuf>,
    /// The cluster file (default /etc/k3s-ha/cluster.toml; for `lab up`, the embedded
    /// reference lab).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
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
    /// This node's VRRP state, the VIP holder and each service's backends.
    Status {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Refresh in place every second.
        #[arg(long)]
        watch: bool,
        /// Ask every server's stats page and show the whole cluster.
        #[arg(long)]
        cluster: bool,
    },
    /// Stop sending new connections to a backend server (open ones continue).
    Drain {
        /// SERVICE/SERVER, e.g. kube-apiserver/lx-k3s-server-02.
        target: String,
    },
    /// Put a backend server in maintenance: no new connections, checks ignored.
    Disable {
        /// SERVICE/SERVER, e.g. kube-apiserver/lx-k3s-server-02.
        target: String,
    },
    /// Return a drained or disabled backend server to service.
    Enable {
        /// SERVICE/SERVER, e.g. kube-apiserver/lx-k3s-server-02.
        target: String,
    },
    /// Re-read cluster.toml in both daemons (a bad file keeps the old config running).
    Reload,
    /// Replace the running lbd by the installed binary without refusing or dropping a
    /// connection, and without moving the VIP (after a package upgrade; also a restart
    /// that keeps everything). Exit status: 0 done, 1 the new lbd did not take over (the
    /// running one goes on serving), 3 the running lbd predates upgrades (restart it), 4
    /// no lbd runs here.
    Upgrade {
        what: UpgradeWhat,
        /// How long the new process may take to be ready, in seconds (default 15).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// Planned maintenance of this node: hand the VIP over and stay backup until `off`.
    Maintenance { state: OnOff },
    /// Install k3s, the DNS zones, the ingress controller or the demo app from cluster.toml.
    Install {
        what: InstallWhat,
        /// Print every file and command; touch nothing.
        #[arg(long)]
        dry_run: bool,
        /// Write files under DIR instead of the system; run nothing.
        #[arg(long, value_name = "DIR")]
        render: Option<PathBuf>,
        /// Which node to install (k3s); default: this machine's node.
        #[arg(long)]
        node: Option<String>,
    },
    /// Convert keepalived.conf (one per node) and haproxy.cfg into a cluster.toml; lists
    /// every setting it could not map.
    Import {
        /// A node's keepalived.conf; repeat once per node to keep each node's priority.
        #[arg(long, value_name = "FILE")]
        keepalived: Vec<PathBuf>,
        /// haproxy.cfg.
        #[arg(long, value_name = "FILE")]
        haproxy: Option<PathBuf>,
        /// Write the cluster file here instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite the output file if it exists.
        #[arg(long)]
        force: bool,
        /// [cluster] name (in neither input).
        #[arg(long)]
        name: Option<String>,
        /// [cluster] domain (in neither input).
        #[arg(long)]
        domain: Option<String>,
    },
    /// The reference cluster's HA layer on this machine, in network namespaces.
    Lab {
        /// Where the lab keeps its state, sockets and logs.
        #[arg(long, global = true, default_value = lbctl::lab::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        #[command(subcommand)]
        cmd: LabCmd,
    },
}

#[derive(Subcommand)]
enum LabCmd {
    /// Build the lab and start vrrpd, lbd and stand-in backends on every server.
    Up {
        /// Namespace name prefix.
        #[arg(long, default_value = lbctl::lab::DEFAULT_PREFIX)]
        prefix: String,
        /// Do not give this host a veth into the lab network.
        #[arg(long)]
        no_host_link: bool,
        /// Where vrrpd, lbd and lbctl are (default: next to this lbctl).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Remove everything the lab made (also after a crash).
    Down,
    /// Nodes, cables, processes and VRRP states.
    Status,
    /// Break a node.
    Fail {
        /// The node's name in the lab's cluster.toml, e.g. lx-k3s-server-01.
        node: String,
        /// link: cut its cable; kill: SIGKILL its daemons; stop: SIGTERM them.
        #[arg(long, value_enum, default_value = "link")]
        how: How,
    },
    /// Reconnect a node and restart whatever of its daemons is not running.
    Recover {
        /// The node's name in the lab's cluster.toml.
        node: String,
    },
    /// Run the validation procedures against the running lab and report figures.
    Test {
        /// The report as JSON (with every probe's samples).
        #[arg(long, conflicts_with = "markdown")]
        json: bool,
        /// The report as Markdown (as in docs/failover.md).
        #[arg(long)]
        markdown: bool,
        /// Run only these scenarios (repeatable); default: all.
        #[arg(long, value_name = "SCENARIO")]
        only: Vec<String>,
    },
    /// (internal) Serve the stand-in backends of one node.
    #[command(hide = true)]
    Backend {
        #[arg(long)]
        node: String,
        #[arg(long)]
        api_port: Option<u16>,
        #[arg(long)]
        http_port: Option<u16>,
        #[arg(long)]
        https_port: Option<u16>,
        /// PORT:KIND (api, http, https, tcp); repeatable.
        #[arg(long, value_name = "PORT:KIND", value_parser = parse_serve)]
        serve: Vec<(u16, lbctl::lab::backend::StandIn)>,
        /// A port that requires a PROXY protocol header; repeatable.
        #[arg(long = "proxy-protocol", value_name = "PORT")]
        proxy: Vec<u16>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum How {
    Link,
    Kill,
    Stop,
    /// SIGTERM vrrpd alone (as its package upgrade does): the VIP moves, lbd serves on.
    StopVrrpd,
}

#[derive(Clone, Copy, ValueEnum)]
enum UpgradeWhat {
    Lbd,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
enum InstallWhat {
    K3s,
    Dns,
    Ingress,
    DemoApp,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a cluster file and print, per node, what it will run.
    Check {
        /// The cluster file (default: --config).
        file: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Standard output that a closed reader (`lbctl ... | head`) ends quietly, as the default
/// SIGPIPE would, instead of a panic.
fn emit(text: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: writing the output: {e}");
        std::process::exit(1);
    }
}

macro_rules! out {
    ($($t:tt)*) => { emit(&format!($($t)*)) };
}

macro_rules! outln {
    () => { emit("\n") };
    ($($t:tt)*) => { emit(&(format!($($t)*) + "\n")) };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `15432:tcp` for `lab backend --serve`.
fn parse_serve(s: &str) -> std::result::Result<(u16, lbctl::lab::backend::StandIn), String> {
    let (port, kind) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected PORT:KIND"))?;
    let port = port
        .parse::<u16>()
        .map_err(|e| format!("{port:?}: not a port: {e}"))?;
    Ok((port, kind.parse()?))
}

fn load(cli_config: Option<&PathBuf>) -> Result<common::config::Cluster> {
    let path = cli_config
        .cloned()
        .unwrap_or_else(|| PathBuf::from(common::DEFAULT_CONFIG));
    Ok(common::config::load(&path)?)
}

fn run(cli: Cli) -> Result<ExitCode> {
    if let Cmd::Lab { .. } = &cli.cmd {
        if let Some(d) = &cli.run_dir {
            anyhow::bail!(
                "--run-dir {} does not apply to the lab: its nodes' sockets are under \
                 STATE_DIR/run/NODE (use --state-dir)",
                d.display()
            );
        }
    }
    let run_dir = cli
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(common::DEFAULT_RUN_DIR));
    match cli.cmd {
        Cmd::Config {
            cmd: ConfigCmd::Check { file, json },
        } => config_check(file.or(cli.config), json),
        Cmd::Status {
            json,
            watch,
            cluster,
        } => status(cli.config.as_ref(), &run_dir, json, watch, cluster),
        Cmd::Drain { target } => admin(
            &run_dir,
            &target,
            AdminState::Drain,
            "DRAIN (no new connections; open ones continue)",
        ),
        Cmd::Disable { target } => admin(&run_dir, &target, AdminState::Maint, "MAINT"),
        Cmd::Enable { target } => admin(
            &run_dir,
            &target,
            AdminState::Ready,
            "ready (UP once its checks pass)",
        ),
        Cmd::Reload => {
            out!("{}", ops::reload(&run_dir)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Upgrade {
            what: UpgradeWhat::Lbd,
            timeout,
        } => {
            let outcome = ops::upgrade_lbd(&run_dir, timeout.map(Duration::from_secs));
            match &outcome {
                ops::UpgradeOutcome::Done(u) => out!("{}", ops::upgraded_text(u)),
                ops::UpgradeOutcome::Failed(e)
                | ops::UpgradeOutcome::Unsupported(e)
                | ops::UpgradeOutcome::NotRunning(e) => eprintln!("error: {e}"),
            }
            Ok(ExitCode::from(outcome.exit_code()))
        }
        Cmd::Maintenance { state } => {
            outln!(
                "{}",
                ops::maintenance(&run_dir, matches!(state, OnOff::On))?
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Install {
            what,
            dry_run,
            render,
            node,
        } => install_cmd(cli.config.as_ref(), what, dry_run, render, node),
        Cmd::Import {
            keepalived,
            haproxy,
            output,
            force,
            name,
            domain,
        } => import_cmd(
            &keepalived,
            haproxy.as_ref(),
            output.as_ref(),
            force,
            name,
            domain,
        ),
        Cmd::Lab { state_dir, cmd } => lab_cmd(cli.config, state_dir, cmd),
    }
}

/// `lbctl config check [FILE] [--json]`.
fn config_check(file: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let file = file.unwrap_or_else(|| PathBuf::from(common::DEFAULT_CONFIG));
    match common::config::load(&file) {
        Ok(cluster) => {
            if json {
                outln!("{:#}", check::render_json(&cluster));
            } else {
                out!("{}", check::render_text(&cluster));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if json {
                outln!(
                    "{:#}",
                    serde_json::json!({ "valid": false, "error": e.to_string(), "file": e.file,
                        "line": e.line, "column": e.column, "key": e.key })
                );
            } else {
                eprintln!("error: {e}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `lbctl status [--json] [--watch] [--cluster]`: 0 only when what was asked answered.
fn status(
    config: Option<&PathBuf>,
    run_dir: &Path,
    json: bool,
    watch: bool,
    cluster: bool,
) -> Result<ExitCode> {
    loop {
        let (text, ok) = if cluster {
            let c = load(config)?;
            let (views, text) = ops::cluster_status(&c);
            // 0 only when every server's lbd and vrrpd answered: a script must see
            // a node that does not.
            let all_ok = views
                .iter()
                .all(|(_, v)| v.as_ref().is_ok_and(|s| s.vrrp.is_some()));
            if json {
                let v: serde_json::Map<String, serde_json::Value> = views
                    .into_iter()
                    .map(|(n, v)| {
                        let v = v.map_or_else(
                            |e| serde_json::json!({ "error": e }),
                            |s| serde_json::to_value(s).unwrap_or_default(),
                        );
                        (n, v)
                    })
                    .collect();
                (format!("{:#}\n", serde_json::Value::Object(v)), all_ok)
            } else {
                (text, all_ok)
            }
        } else {
            let s = ops::node_status(run_dir);
            let ok = s.vrrp.is_ok() || s.lbd.is_ok();
            if json {
                (format!("{:#}\n", ops::node_status_json(&s)), ok)
            } else {
                (ops::render_node_status(&s), ok)
            }
        };
        if watch {
            // Clear the screen and home the cursor, then redraw under a timestamp.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            out!(
                "\x1b[2J\x1b[H{} (every 1 s; Ctrl-C to stop)\n{text}",
                lbctl::ops::utc_timestamp(now)
            );
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        out!("{text}");
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
}

/// `lbctl drain|disable|enable SERVICE/SERVER`: the cluster's admin state, and who has it.
fn admin(run_dir: &Path, target: &str, state: AdminState, what: &str) -> Result<ExitCode> {
    let s = ops::set_server(run_dir, target, state)?;
    outln!("{target}: {what}");
    outln!("{}", ops::shared_line(&s));
    Ok(ExitCode::SUCCESS)
}

/// `lbctl install k3s|dns|ingress|demo-app`.
fn install_cmd(
    config: Option<&PathBuf>,
    what: InstallWhat,
    dry_run: bool,
    render: Option<PathBuf>,
    node: Option<String>,
) -> Result<ExitCode> {
    let c = load(config).context("install reads the cluster file")?;
    let target = match what {
        InstallWhat::K3s => install::Target::K3s,
        InstallWhat::Dns => install::Target::Dns,
        InstallWhat::Ingress => install::Target::Ingress,
        InstallWhat::DemoApp => install::Target::DemoApp,
    };
    install::run(
        &c,
        target,
        &install::InstallOpts {
            dry_run,
            render_dir: render,
            node,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `lbctl import --keepalived F... [--haproxy F] [-o OUT]`: the converted cluster.toml and
/// what did not map.
fn import_cmd(
    keepalived: &[PathBuf],
    haproxy: Option<&PathBuf>,
    output: Option<&PathBuf>,
    force: bool,
    name: Option<String>,
    domain: Option<String>,
) -> Result<ExitCode> {
    let read = |p: &PathBuf| -> Result<lbctl::import::Source> {
        Ok(lbctl::import::Source {
            label: p.display().to_string(),
            text: std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        })
    };
    let opts = lbctl::import::ImportOptions {
        keepalived: keepalived.iter().map(read).collect::<Result<_>>()?,
        haproxy: haproxy.map(read).transpose()?,
        name,
        domain,
    };
    let imported = match lbctl::import::import(&opts) {
        Ok(i) => i,
        Err(lbctl::import::ImportError::Invalid { error, toml, notes }) => {
            eprint!("{}", lbctl::import::render_notes(&notes));
            anyhow::bail!("the converted cluster.toml does not validate: {error}\n--- converted text ---\n{toml}");
        }
        Err(e) => return Err(e.into()),
    };
    match &output {
        Some(path) => {
            if path.exists() && !force {
                anyhow::bail!(
                    "{} exists: not overwritten (--force to replace it)",
                    path.display()
                );
            }
            std::fs::write(path, &imported.toml)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => out!("{}", imported.toml),
    }
    eprint!("{}", lbctl::import::render_notes(&imported.notes));
    Ok(ExitCode::SUCCESS)
}

fn lab_cmd(config: Option<PathBuf>, state_dir: PathBuf, cmd: LabCmd) -> Result<ExitCode> {
    use lbctl::lab;
    // The daemons and stand-ins the lab starts must not inherit this shell's files.
    lab::close_inherited_fds();
    match cmd {
        LabCmd::Backend {
            node,
            api_port,
            http_port,
            https_port,
            serve,
            proxy,
        } => {
            lab::backend::run(lab::backend::BackendOpts {
                node,
                api_port,
                http_port,
                https_port,
                serve,
                proxy,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Up {
            prefix,
            no_host_link,
            bin_dir,
        } => {
            if !nix::unistd::geteuid().is_root() {
                anyhow::bail!("the lab makes network namespaces: run it as root");
            }
            let (config_text, config_origin) = match &config {
                Some(p) => (
                    std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?,
                    p.display().to_string(),
                ),
                None => (
                    common::config::REFERENCE_LAB.to_owned(),
                    "examples/cluster.toml (embedded)".to_owned(),
                ),
            };
            let bin_dir = match bin_dir {
                Some(d) => d,
                None => std::env::current_exe()?
                    .parent()
                    .map(std::path::Path::to_path_buf)
                    .ok_or_else(|| anyhow::anyhow!("cannot tell where lbctl is"))?,
            };
            let st = lab::up(&lab::LabOptions {
                config_text,
                config_origin,
                prefix,
                state_dir,
                host_link: !no_host_link,
                bin_dir,
            })?;
            out!("{}", lab::describe(&st)?);
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Down => {
            outln!("{}", lab::down(&state_dir)?);
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Status => {
            let st = lab::LabState::load(&state_dir)?;
            out!("{}", lab::status(&st));
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Fail { node, how } => {
            let mut st = lab::LabState::load(&state_dir)?;
            let how = match how {
                How::Link => lab::FailHow::Link,
                How::Kill => lab::FailHow::Kill,
                How::Stop => lab::FailHow::Stop,
                How::StopVrrpd => lab::FailHow::StopVrrpd,
            };
            outln!("{}", lab::fail(&mut st, &node, how)?);
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Recover { node } => {
            let mut st = lab::LabState::load(&state_dir)?;
            outln!("{}", lab::recover(&mut st, &node)?);
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Test {
            json,
            markdown,
            only,
        } => {
            let mut st = lab::LabState::load(&state_dir)?;
            let report = lab::scenarios::run_all(&mut st, &only)?;
            if json {
                outln!("{:#}", serde_json::to_value(&report)?);
            } else if markdown {
                out!(
                    "{}",
                    lab::scenarios::render_markdown(&report, "lbctl lab test --markdown")
                );
            } else {
                out!("{}", lab::scenarios::render_text(&report));
            }
            let ok = report.scenarios.iter().all(|s| s.passed);
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
