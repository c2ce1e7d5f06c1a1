//! Which node is this process? (in progress)
use super::{Cluster, Node};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSource {
    Flag,
    Hostname,
    LocalAddress,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentifyError {
    #[error("no node")]
    None,
}

pub fn identify<'a>(cluster: &'a Cluster, flag: Option<&str>) -> Result<(&'a Node, NodeSource), IdentifyError> {
    match flag.and_then(|f| cluster.node(f)) {
        Some(n) => Ok((n, NodeSource::Flag)),
        None => Err(IdentifyError::None),
    }
}
