//! A gRPC channel to an agent socket, for `lanyard fetch` and the tests.

use std::path::Path;

use tonic::transport::{Channel, Endpoint};

/// Connects to the agent at `socket`.
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
}

/// A request carrying the `workload.spiffe.io: true` header.
pub fn with_header<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        crate::socket::api::SECURITY_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    r
}
