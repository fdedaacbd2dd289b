//! The baseline: `FetchJWTSVID` answered with a constant, over a Unix socket, with
//! the same tonic server stack and message types as the agent.

use std::path::Path;

use lanyard_proto::spiffe::spiffe_workload_api_server::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer,
};
use lanyard_proto::spiffe::*;
use tonic::{Request, Response, Status};

type S<T> = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send>>;

#[derive(Debug)]
struct Empty(JwtsvidResponse);

#[tonic::async_trait]
impl SpiffeWorkloadApi for Empty {
    type FetchX509SVIDStream = S<X509svidResponse>;
    type FetchX509BundlesStream = S<X509BundlesResponse>;
    type FetchJWTBundlesStream = S<JwtBundlesResponse>;
    async fn fetch_x509svid(
        &self,
        _: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn fetch_x509_bundles(
        &self,
        _: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn fetch_jwtsvid(
        &self,
        _: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        Ok(Response::new(self.0.clone()))
    }
    async fn fetch_jwt_bundles(
        &self,
        _: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn validate_jwtsvid(
        &self,
        _: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        Err(Status::unimplemented(""))
    }
}

pub fn serve(socket: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        // A reply the size of a real JWT-SVID response.
        let reply = JwtsvidResponse {
            svids: vec![Jwtsvid {
                spiffe_id: "spiffe://example.org/bench/0".into(),
                svid: "x".repeat(360),
                hint: String::new(),
            }],
        };
        tonic::transport::Server::builder()
            .add_service(SpiffeWorkloadApiServer::new(Empty(reply)))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .unwrap();
    });
}
