//! The SPIFFE Workload API (`/SpiffeWorkloadAPI/*`), wire-compatible with the spec.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use lanyard_proto::spiffe::{
    spiffe_workload_api_server::SpiffeWorkloadApi, JwtBundlesRequest, JwtBundlesResponse, Jwtsvid,
    JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest, ValidateJwtsvidResponse,
    X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest, X509svidResponse,
};
use tonic::{Request, Response, Status};

use super::{now, Ctx, Stream};
use crate::cache::{Kind, Value};

/// The service.
#[derive(Debug, Clone)]
pub struct SpiffeService(pub Arc<Ctx>);

fn td_id(ctx: &Ctx) -> String {
    format!("spiffe://{}", ctx.authority.bundle().trust_domain)
}

fn x509_bundle(ctx: &Ctx) -> Vec<u8> {
    ctx.authority.bundle().x509_roots.concat()
}

fn to_prost(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind as K;
    let kind = match v {
        serde_json::Value::Null => K::NullValue(0),
        serde_json::Value::Bool(b) => K::BoolValue(*b),
        serde_json::Value::Number(n) => K::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => K::StringValue(s.clone()),
        serde_json::Value::Array(a) => K::ListValue(prost_types::ListValue {
            values: a.iter().map(to_prost).collect(),
        }),
        serde_json::Value::Object(o) => K::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), to_prost(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// What a FetchJWTSVID request asks for, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSvidAsk {
    /// The one SPIFFE ID wanted; `None` for all of the caller's.
    pub spiffe_id: Option<String>,
    /// The audiences, none empty; at least one.
    pub audiences: Vec<String>,
}

/// Checks a FetchJWTSVID request: at least one non-empty audience (the spec's
/// `InvalidArgument` otherwise). Empty audiences are dropped.
pub fn jwt_svid_request(r: &JwtsvidRequest) -> Result<JwtSvidAsk, Status> {
    let audiences: Vec<String> = r
        .audience
        .iter()
        .filter(|a| !a.is_empty())
        .cloned()
        .collect();
    if audiences.is_empty() {
        return Err(Status::invalid_argument("audience must be specified"));
    }
    Ok(JwtSvidAsk {
        spiffe_id: (!r.spiffe_id.is_empty()).then(|| r.spiffe_id.clone()),
        audiences,
    })
}

/// A ValidateJWTSVID request, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidateAsk<'a> {
    /// The token to validate.
    pub svid: &'a str,
    /// The audience it must name.
    pub audience: &'a str,
}

/// Checks a ValidateJWTSVID request: an audience and a token, both non-empty.
pub fn validate_jwt_svid_request(r: &ValidateJwtsvidRequest) -> Result<ValidateAsk<'_>, Status> {
    if r.audience.is_empty() {
        return Err(Status::invalid_argument("audience must be specified"));
    }
    if r.svid.is_empty() {
        return Err(Status::invalid_argument("svid must be specified"));
    }
    Ok(ValidateAsk {
        svid: &r.svid,
        audience: &r.audience,
    })
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for SpiffeService {
    type FetchX509SVIDStream = Stream<X509svidResponse>;
    type FetchX509BundlesStream = Stream<X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        const RPC: &str = "FetchX509SVID";
        let (peer, attested) = self.0.authorize(&req, RPC).await?;
        let stream = self.0.stream(RPC, peer, move |ctx| {
            let attested = attested.clone();
            async move {
                let bundle = x509_bundle(&ctx);
                let mut svids = Vec::new();
                for e in attested
                    .entries()
                    .iter()
                    .filter(|e| e.subject.starts_with("spiffe://"))
                {
                    let s = ctx.credential(Kind::X509Svid, e, [], &attested).await?;
                    if let Value::X509Svid { chain, key } = &s.value {
                        // All or nothing: never a partial chain or an empty key.
                        let der: Result<Vec<Vec<u8>>, _> =
                            chain.iter().map(|c| STANDARD.decode(c)).collect();
                        let key = STANDARD.decode(key.as_bytes());
                        let (Ok(der), Ok(key)) = (der, key) else {
                            return Err(Status::internal("cached X.509-SVID is unreadable"));
                        };
                        if der.is_empty() || key.is_empty() {
                            return Err(Status::internal("cached X.509-SVID is empty"));
                        }
                        svids.push(X509svid {
                            spiffe_id: e.subject.clone(),
                            x509_svid: der.concat(),
                            x509_svid_key: key,
                            bundle: bundle.clone(),
                            hint: String::new(),
                        });
                    }
                }
                if svids.is_empty() {
                    return Err(Status::permission_denied(
                        "no SPIFFE identity issued to this process",
                    ));
                }
                Ok(X509svidResponse {
                    svids,
                    crl: Vec::new(),
                    federated_bundles: HashMap::new(),
                })
            }
        });
        Ok(Response::new(stream))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        const RPC: &str = "FetchX509Bundles";
        let (peer, _) = self.0.authorize(&req, RPC).await?;
        let stream = self.0.stream(RPC, peer, |ctx| async move {
            Ok(X509BundlesResponse {
                crl: Vec::new(),
                bundles: HashMap::from([(td_id(&ctx), x509_bundle(&ctx))]),
            })
        });
        Ok(Response::new(stream))
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        const RPC: &str = "FetchJWTSVID";
        let ask = match jwt_svid_request(req.get_ref()) {
            Ok(ask) => ask,
            Err(status) => {
                self.0.check_header(&req, RPC)?;
                self.0.metrics.request(RPC, status.code());
                return Err(status);
            }
        };
        let (peer, attested) = self.0.authorize(&req, RPC).await?;
        let mut svids = Vec::new();
        for e in attested.entries().iter().filter(|e| {
            e.subject.starts_with("spiffe://")
                && ask.spiffe_id.as_ref().is_none_or(|want| *want == e.subject)
        }) {
            let s = self
                .0
                .credential(Kind::JwtSvid, e, ask.audiences.clone(), &attested)
                .await?;
            if let Value::JwtSvid { token } = s.value {
                svids.push(Jwtsvid {
                    spiffe_id: e.subject.clone(),
                    svid: token,
                    hint: String::new(),
                });
            }
        }
        if svids.is_empty() {
            self.0.metrics.request(RPC, tonic::Code::PermissionDenied);
            return Err(Status::permission_denied(
                "no identity issued for the requested SPIFFE ID",
            ));
        }
        self.0.recheck(RPC, &peer)?;
        self.0.metrics.request(RPC, tonic::Code::Ok);
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        const RPC: &str = "FetchJWTBundles";
        let (peer, _) = self.0.authorize(&req, RPC).await?;
        let stream = self.0.stream(RPC, peer, |ctx| async move {
            Ok(JwtBundlesResponse {
                bundles: HashMap::from([(td_id(&ctx), ctx.authority.bundle().jwks)]),
            })
        });
        Ok(Response::new(stream))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        const RPC: &str = "ValidateJWTSVID";
        let peer = self.0.check_header(&req, RPC)?;
        let r = validate_jwt_svid_request(req.get_ref())
            .inspect_err(|status| self.0.metrics.request(RPC, status.code()))?;
        let claims = self
            .0
            .authority
            .validate_jwt_svid(r.svid, r.audience, now())
            .map_err(|e| {
                self.0.metrics.request(RPC, tonic::Code::InvalidArgument);
                Status::invalid_argument(format!("invalid JWT-SVID: {e}"))
            })?;
        self.0.recheck(RPC, &peer)?;
        self.0.metrics.request(RPC, tonic::Code::Ok);
        let spiffe_id = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_owned();
        let fields = claims
            .iter()
            .map(|(k, v)| (k.clone(), to_prost(v)))
            .collect();
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id,
            claims: Some(prost_types::Struct { fields }),
        }))
    }
}
