//! Transport: the libp2p swarm task and the NATS relay client task.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("x")]
    X,
}
