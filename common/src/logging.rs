//! One logging setup for both daemons.
//!
//! - Under systemd (stderr is the journal stream named by `JOURNAL_STREAM`): the native
//!   journal protocol (tracing-journald), so every line has its real priority
//!   (`journalctl -p warning` shows warnings and errors) and its fields as journal fields
//!   (`journalctl VRID=51`). If the journal socket cannot be opened, stderr lines carry
//!   the sd-daemon(3) `<N>` prefix instead, which journald turns into the priority.
//! - Otherwise plain text on stderr, with colours only on a terminal (never escape codes
//!   in a pipe or a log file).
//!
//! `RUST_LOG` filters as usual (default `info`).

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Where the log lines go; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Journal,
    /// stderr with `<N>` priority prefixes (journal stream, socket not usable).
    PrefixedStderr,
    /// stderr, colours when it is a terminal.
    Stderr {
        ansi: bool,
    },
}

/// Is stderr the journal stream systemd connected (`JOURNAL_STREAM=DEV:INODE`)?
pub fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// `netlink_proto` warns at length (a whole link dump) about multicast messages that arrive
/// on a request socket, and about a closed channel when vrrpd drops its connection at exit:
/// noise for an operator, not a problem. Its real failures reach us as errors of the calls.
const QUIET: &str = "netlink_proto=error";

fn filter() -> EnvFilter {
    let base = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Unless RUST_LOG asks for that crate by name.
    let asked = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("netlink_proto"));
    match QUIET.parse() {
        Ok(d) if !asked => base.add_directive(d),
        _ => base,
    }
}

/// Set up logging for daemon `name` (the journal's `SYSLOG_IDENTIFIER`); returns where the
/// lines go. Call once, first thing in `main`.
pub fn init(name: &str) -> Sink {
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer.with_syslog_identifier(name.to_owned());
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .try_init();
                return Sink::Journal;
            }
            Err(_) => {
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(filter())
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .event_format(Prefixed(Format::default().without_time()))
                    .try_init();
                return Sink::PrefixedStderr;
            }
        }
    }
    let ansi = std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
    Sink::Stderr { ansi }
}

/// The sd-daemon(3) priority of a level: `<3>` error, `<4>` warning, `<6>` info,
/// `<7>` debug and trace.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// The default format behind a `<N>` prefix.
struct Prefixed<F>(F);

impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }

    #[test]
    fn a_pipe_is_not_the_journal() {
        // JOURNAL_STREAM naming another file is not ours (e.g. inherited by a child).
        std::env::set_var("JOURNAL_STREAM", "1:2");
        assert!(!stderr_is_journal());
        std::env::remove_var("JOURNAL_STREAM");
        assert!(!stderr_is_journal());
    }
}
