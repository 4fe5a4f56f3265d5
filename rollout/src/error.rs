use crate::transport::TransportError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Policy(#[from] policies::Error),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn msg(message: impl Into<String>) -> Error {
        Error::Other(message.into())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
