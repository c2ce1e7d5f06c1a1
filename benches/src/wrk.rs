//! wrk (Debian's, HTTP/1.1 load generator): run it and read its report.

use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// What wrk printed that we read.
#[derive(Debug, Default)]
pub struct Wrk {
    pub requests_per_s: f64,
    /// Requests completed in the run ("N requests in 4.04s").
    pub requests: u64,
    pub bytes_per_s: f64,
    pub p99_us: Option<f64>,
    pub errors: u64,
}

pub fn wrk(url: &str, threads: u32, conns: u32, secs: u64, extra: &[&str]) -> Result<Wrk> {
    let out = Command::new("/usr/bin/timeout")
        .arg((secs + 20).to_string())
        .arg("/usr/bin/wrk")
        .args(["-t", &threads.to_string(), "-c", &conns.to_string(), "-d"])
        .arg(format!("{secs}s"))
        .args(extra)
        .arg(url)
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("wrk output:\n{text}"))
}

pub fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut w = Wrk::default();
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            w.requests_per_s = v.trim().parse()?;
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            w.requests = n.trim().parse()?;
        } else if let Some(v) = line.strip_prefix("Transfer/sec:") {
            w.bytes_per_s = bytes(v.trim())?;
        } else if let Some(v) = line.strip_prefix("99%") {
            w.p99_us = Some(micros(v.trim())?);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            w.errors += v
                .split(',')
                .filter_map(|f| f.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.errors += v.trim().parse::<u64>()?;
        }
    }
    if w.requests_per_s == 0.0 {
        bail!("no Requests/sec line");
    }
    Ok(w)
}

/// wrk's sizes: 1024-based, "B", "KB", "MB", "GB".
fn bytes(v: &str) -> Result<f64> {
    let (num, mul) = [
        ("GB", 1024.0 * 1024.0 * 1024.0),
        ("MB", 1024.0 * 1024.0),
        ("KB", 1024.0),
        ("B", 1.0),
    ]
    .iter()
    .find_map(|(s, m)| v.strip_suffix(s).map(|n| (n, *m)))
    .with_context(|| format!("size {v:?}"))?;
    Ok(num.trim().parse::<f64>()? * mul)
}

/// wrk's durations: "us", "ms", "s", "m".
fn micros(v: &str) -> Result<f64> {
    let (num, mul) = [("us", 1.0), ("ms", 1e3), ("s", 1e6), ("m", 60e6)]
        .iter()
        .find_map(|(s, m)| v.strip_suffix(s).map(|n| (n, *m)))
        .with_context(|| format!("duration {v:?}"))?;
    Ok(num.trim().parse::<f64>()? * mul)
}

/// The median (the mean of the middle two of an even count); NaN of none.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 4s test @ http://127.0.0.1:1/1k\n  2 threads and 10 connections\n\
  Latency Distribution\n     50%   88.00us\n     99%    1.25ms\n  \
  1000 requests in 4.00s, 1.20MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n\
Non-2xx or 3xx responses: 3\nRequests/sec:  12345.67\nTransfer/sec:      1.50MB\n";
        let w = parse_wrk(text).unwrap();
        assert!((w.requests_per_s - 12345.67).abs() < 1e-6);
        assert_eq!(w.requests, 1000);
        assert!((w.bytes_per_s - 1.5 * 1024.0 * 1024.0).abs() < 1e-3);
        assert_eq!(w.p99_us, Some(1250.0));
        assert_eq!(w.errors, 6);
        assert!(parse_wrk("nothing").is_err());
        assert_eq!(micros("2.5s").unwrap(), 2.5e6);
        assert_eq!(bytes("512B").unwrap(), 512.0);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
