//! The wire: oversized messages, a missing security header, bytes that are not HTTP/2.

use lanyard_agent::client::{connect, with_header};
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::spiffe::JwtsvidRequest;
use lanyard_tests::{entry, my_uid, rt, Deployment};

use super::jwt_svid;

#[test]
fn oversized_messages_missing_headers_and_junk_bytes() {
    let d = Deployment::new(
        "sec-wire",
        &entry("me", &[&format!("unix:uid:{}", my_uid())]),
    );
    let agent = d.start();
    rt().block_on(async {
        let mut c = SpiffeWorkloadApiClient::new(connect(&d.socket()).await.unwrap());
        let req = |aud: String| JwtsvidRequest {
            audience: vec![aud],
            spiffe_id: String::new(),
        };
        // No `workload.spiffe.io: true`: InvalidArgument, as the SPIFFE spec says.
        let e = c
            .fetch_jwtsvid(tonic::Request::new(req("a".into())))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        let mut r = tonic::Request::new(req("a".into()));
        r.metadata_mut()
            .insert("workload.spiffe.io", "false".parse().unwrap());
        let e = c.fetch_jwtsvid(r).await.unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::InvalidArgument,
            "header false: {e:?}"
        );
        // 200 KB: over the 64 KiB cap, refused before decoding.
        let e = c
            .fetch_jwtsvid(with_header(req("x".repeat(200_000))))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        // The same connection still works.
        c.fetch_jwtsvid(with_header(req("a".into()))).await.unwrap();
    });
    // Bytes that are not HTTP/2: the connection is dropped, the agent carries on.
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xff; 4096],
        b"",
    ] {
        use std::io::{Read as _, Write as _};
        let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .unwrap();
        let _ = s.write_all(junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    jwt_svid(&d.socket(), "").unwrap();
    assert!(!agent.log().contains("panicked"), "{}", agent.log());
}
