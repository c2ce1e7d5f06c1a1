//! The control-socket commands (the requests and answers are typed in
//! [`common::proto::lbd`]).

use common::proto::lbd::{AdminState, Answer, Done, Reloaded, Request, Suspected};

use crate::engine::{Admin, Engine};

/// Highest weight `set-weight` takes (HAProxy's range).
pub const MAX_WEIGHT: u32 = 256;

/// Answer one request, or say why not.
pub async fn handle(engine: &Engine, req: Request) -> Result<Answer, String> {
    match req {
        Request::Status => Ok(Answer::Status(Box::new(engine.snapshot()))),
        Request::SetServer(r) => {
            let admin = match r.state {
                AdminState::Ready => Admin::Ready,
                AdminState::Drain => Admin::Drain,
                AdminState::Maint => Admin::Maint,
            };
            engine
                .set_admin(&r.service, &r.server, admin)
                .map_err(|e| e.to_string())?;
            Ok(Answer::Done(Done {}))
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
            Ok(Answer::Done(Done {}))
        }
        Request::Suspect(r) => {
            let servers = engine.suspect(r.node.as_deref(), &r.addresses, &r.why);
            Ok(Answer::Suspected(Suspected {
                servers: servers as u64,
            }))
        }
        Request::Reload => {
            engine.reload().await?;
            Ok(Answer::Reloaded(Reloaded {
                reloads: engine.snapshot().reloads,
            }))
        }
    }
}
