//! The control-socket commands (the requests and answers are typed in
//! [`common::proto::lbd`]).

use std::sync::Arc;
use std::time::Duration;

use common::proto::lbd::{Answer, FlowCount, Flows, Reloaded, Request, Shared, Suspected};

use crate::engine::Engine;
use crate::peers::Peers;

/// Highest weight `set-weight` takes (HAProxy's range).
pub const MAX_WEIGHT: u32 = 256;

/// How long an admin change waits for the other servers to confirm it before answering
/// (the ones that did not are retried in the background).
const SHARE_WAIT: Duration = Duration::from_secs(1);

/// Answer one request, or say why not.
pub async fn handle(
    engine: &Engine,
    peers: Option<&Arc<Peers>>,
    req: Request,
) -> Result<Answer, String> {
    let share = async || match peers {
        Some(p) => p.push_all(engine, SHARE_WAIT).await,
        None => Shared::default(),
    };
    match req {
        Request::Status => Ok(Answer::Status(Box::new(engine.snapshot()))),
        Request::SetServer(r) => {
            engine
                .set_admin(&r.service, &r.server, r.state.into())
                .map_err(|e| e.to_string())?;
            Ok(Answer::Shared(share().await))
        }
        Request::SetWeight(r) => {
            if r.weight > MAX_WEIGHT {
                return Err(format!(
                    "weight {} is out of range: expected an integer 0..={MAX_WEIGHT}",
                    r.weight
                ));
            }
            engine
                .set_weight(&r.service, &r.server, r.weight)
                .map_err(|e| e.to_string())?;
            Ok(Answer::Shared(share().await))
        }
        Request::Suspect(r) => {
            let servers = engine.suspect(r.node.as_deref(), &r.addresses, &r.why);
            Ok(Answer::Suspected(Suspected {
                servers: servers as u64,
            }))
        }
        Request::Flows(f) => flows(f).await.map(Answer::Flows),
        Request::Sync(_) => Err("`sync` is for the other servers' lbd, on the peer port".into()),
        Request::Upgrade(_) => Err("`upgrade` is served on lbd's control socket only".into()),
        Request::Reload => {
            engine.reload().await?;
            Ok(Answer::Reloaded(Reloaded {
                reloads: engine.snapshot().reloads,
            }))
        }
    }
}

/// `flows`: read from the kernel (sock_diag), off the runtime's threads.
pub async fn flows(f: Flows) -> Result<FlowCount, String> {
    tokio::task::spawn_blocking(move || common::flows::count(&f.addresses))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot read the kernel's TCP sockets: {e}"))
}
