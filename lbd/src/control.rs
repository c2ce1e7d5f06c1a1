//! Control commands served on `RUN_DIR/lbd.sock` (protocol in `common::ctl`):
//!
//! | cmd          | args                                                   | answer             |
//! |--------------|--------------------------------------------------------|--------------------|
//! | `status`     | none                                                   | the [`Snapshot`]   |
//! | `set-server` | `{"service", "server", "state": "ready"/"drain"/"maint"}` | `{}`            |
//! | `set-weight` | `{"service", "server", "weight"}`                      | `{}`               |
//! | `reload`     | none                                                   | `{"reloads": N}`   |
//!
//! `server` is the server's name as the snapshot shows it, or its `host:port`.
//!
//! [`Snapshot`]: crate::snapshot::Snapshot

use serde_json::{json, Value};

use crate::engine::{Admin, Engine};

/// Answer one command: `Ok(result)` or `Err(message)`.
pub async fn handle(engine: &Engine, cmd: &str, args: &Value) -> Result<Value, String> {
    match cmd {
        "status" => serde_json::to_value(engine.snapshot()).map_err(|e| e.to_string()),
        "set-server" => {
            let (service, server) = service_server(args)?;
            let state = str_arg(args, "state")?;
            let admin = Admin::parse(state).ok_or_else(|| {
                format!("state {state:?} is not one of \"ready\", \"drain\", \"maint\"")
            })?;
            engine
                .set_admin(service, server, admin)
                .map_err(|e| e.to_string())?;
            Ok(json!({}))
        }
        "set-weight" => {
            let (service, server) = service_server(args)?;
            let weight = args
                .get("weight")
                .and_then(Value::as_u64)
                .and_then(|w| u32::try_from(w).ok())
                .filter(|w| *w <= 256)
                .ok_or("missing or bad \"weight\": expected an integer 0..=256")?;
            engine
                .set_weight(service, server, weight)
                .map_err(|e| e.to_string())?;
            Ok(json!({}))
        }
        "reload" => {
            engine.reload().await?;
            Ok(json!({ "reloads": engine.snapshot().reloads }))
        }
        other => Err(format!(
            "unknown command {other:?} (lbd knows: status, set-server, set-weight, reload)"
        )),
    }
}

fn str_arg<'a>(args: &'a Value, key: &str) -> Result<&'a str, String> {
    args.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string argument {key:?}"))
}

fn service_server(args: &Value) -> Result<(&str, &str), String> {
    Ok((str_arg(args, "service")?, str_arg(args, "server")?))
}
