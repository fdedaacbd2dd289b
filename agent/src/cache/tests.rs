//! The cache's unit tests: keys and refresh points (`keys`), and its
//! behaviour against a counting authority (`behaviour`).

#[cfg(test)]
mod keys {
    use super::super::*;

    #[test]
    fn audience_sets_do_not_collide() {
        let a = Key::new(
            Kind::JwtSvid,
            "spiffe://t/x",
            ["ab".to_owned(), "cd".to_owned()],
        );
        let b = Key::new(
            Kind::JwtSvid,
            "spiffe://t/x",
            ["a".to_owned(), "bcd".to_owned()],
        );
        assert_ne!(a, b);
        let c = Key::new(
            Kind::JwtSvid,
            "spiffe://t/x",
            ["cd".to_owned(), "ab".to_owned(), "ab".to_owned()],
        );
        assert_eq!(a, c);
    }

    #[test]
    fn refresh_is_near_half_life() {
        for _ in 0..100 {
            let r = refresh_point(1000, 2000);
            assert!((1400..=1500).contains(&r), "{r}");
        }
    }
}

#[cfg(test)]
mod behaviour {
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use futures_util::future::BoxFuture;

    use super::super::*;
    use crate::authority::Bundle;
    use crate::svid::X509Svid;

    /// Counts mints, takes a while, and can be told to fail.
    #[derive(Debug, Default)]
    struct Fake {
        mints: AtomicUsize,
        attempts: AtomicUsize,
        fail: AtomicBool,
    }

    impl Authority for Fake {
        fn mint_credential<'a>(
            &'a self,
            _: &'a CredentialRequest,
            _: lanyard_token::PublicKey,
            _: u64,
        ) -> BoxFuture<'a, Result<(String, u64), AuthorityError>> {
            unreachable!()
        }
        fn jwt_svid<'a>(
            &'a self,
            sub: &'a str,
            _: &'a [String],
            ttl: u64,
            now: u64,
        ) -> BoxFuture<'a, Result<(String, u64), AuthorityError>> {
            Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                self.attempts.fetch_add(1, Ordering::SeqCst);
                if self.fail.load(Ordering::SeqCst) {
                    return Err(AuthorityError::File {
                        path: "fake".into(),
                        reason: "down".into(),
                    });
                }
                let n = self.mints.fetch_add(1, Ordering::SeqCst);
                Ok((format!("{sub}#{n}"), now + ttl))
            })
        }
        fn x509_svid<'a>(
            &'a self,
            _: &'a str,
            _: u64,
            _: u64,
        ) -> BoxFuture<'a, Result<X509Svid, AuthorityError>> {
            unreachable!()
        }
        fn bundle(&self) -> Bundle {
            unreachable!()
        }
        fn validate_jwt_svid(
            &self,
            _: &str,
            _: &str,
            _: u64,
        ) -> Result<serde_json::Map<String, serde_json::Value>, crate::svid::JwtSvidError> {
            unreachable!()
        }
        fn verifier(&self) -> lanyard_token::Verifier {
            unreachable!()
        }
        fn expires_at(&self) -> u64 {
            u64::MAX
        }
    }

    fn spec() -> Spec {
        Spec {
            ttl_secs: 100,
            networks: vec![],
            attrs: vec![],
        }
    }

    fn token(s: &Stored) -> String {
        match &s.value {
            Value::JwtSvid { token } => token.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_mint_in_flight_per_key() {
        let fake = Arc::new(Fake::default());
        let cache = Arc::new(Cache::new(fake.clone(), std::env::temp_dir()));
        let key = Key::new(Kind::JwtSvid, "spiffe://t/a", ["x".to_owned()]);
        let calls: Vec<_> = (0..32)
            .map(|_| {
                let (c, k) = (cache.clone(), key.clone());
                tokio::spawn(async move { token(&c.get(&k, &spec(), 1000).await.unwrap()) })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap(), "spiffe://t/a#0");
        }
        assert_eq!(fake.mints.load(Ordering::SeqCst), 1);
        // Another audience set is another key.
        let other = Key::new(Kind::JwtSvid, "spiffe://t/a", ["y".to_owned()]);
        cache.get(&other, &spec(), 1000).await.unwrap();
        assert_eq!(fake.mints.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn renews_after_half_life_and_keeps_valid_credential_on_failure() {
        let fake = Arc::new(Fake::default());
        let cache = Cache::new(fake.clone(), std::env::temp_dir());
        let key = Key::new(Kind::JwtSvid, "spiffe://t/a", []);
        let first = cache.get(&key, &spec(), 1000).await.unwrap();
        assert!(
            (1040..=1050).contains(&first.refresh_at),
            "{}",
            first.refresh_at
        );
        // Past the refresh point, the issuer is down: the old one is still valid and served.
        fake.fail.store(true, Ordering::SeqCst);
        assert_eq!(
            token(&cache.get(&key, &spec(), 1060).await.unwrap()),
            token(&first)
        );
        // Once it has expired, failure is an error: never an expired credential.
        assert!(cache.get(&key, &spec(), 1100).await.is_err());
        // The issuer is back: rotation mints a new one.
        fake.fail.store(false, Ordering::SeqCst);
        cache.rotate_due(1101).await;
        assert_eq!(
            token(&cache.get(&key, &spec(), 1102).await.unwrap()),
            "spiffe://t/a#1"
        );
    }

    #[tokio::test]
    async fn failed_renewals_back_off() {
        let fake = Arc::new(Fake::default());
        let cache = Cache::new(fake.clone(), std::env::temp_dir());
        let key = Key::new(Kind::JwtSvid, "spiffe://t/a", []);
        cache.get(&key, &spec(), 1000).await.unwrap();
        fake.fail.store(true, Ordering::SeqCst);
        // The rotation loop ticks every second for two minutes of an outage.
        for t in 1050..1170 {
            cache.rotate_due(t).await;
        }
        let tries = fake.attempts.load(Ordering::SeqCst) - 1;
        // Doubling from 2 s (±50 %): at most about log2(120) + a few, never 120.
        assert!(
            (3..=12).contains(&tries),
            "{tries} renewal attempts in 120 s"
        );
        for d in 1..20 {
            let b = backoff(d);
            let base = (1u64 << d.min(9)).min(300);
            assert!(b >= base / 2 && b <= base + base / 2, "backoff({d}) = {b}");
        }
    }

    #[tokio::test]
    async fn unused_keys_are_not_renewed_and_then_dropped() {
        let fake = Arc::new(Fake::default());
        let cache = Cache::new(fake.clone(), std::env::temp_dir());
        let used = Key::new(Kind::JwtSvid, "spiffe://t/used", []);
        let once = Key::new(Kind::JwtSvid, "spiffe://t/once", []);
        cache.get(&used, &spec(), 1000).await.unwrap();
        cache.get(&once, &spec(), 1000).await.unwrap();
        // `used` is asked for again, and renewed; `once` never again.
        let mut t = 1000;
        while t < 1300 {
            t += 1;
            if t % 30 == 0 {
                cache.get(&used, &spec(), t).await.unwrap();
            }
            cache.rotate_due(t).await;
        }
        assert!(
            cache.get(&used, &spec(), t).await.unwrap().issued_at > 1100,
            "used key not renewed"
        );
        assert_eq!(cache.len(), 1, "the key asked for once is still held");
    }

    #[tokio::test]
    async fn size_is_bounded() {
        let fake = Arc::new(Fake::default());
        let cache = Cache::new(fake, std::env::temp_dir());
        // Fill past the bound with distinct audience sets (what a hostile caller controls).
        for i in 0..(MAX_ENTRIES + 10) {
            let key = Key::new(Kind::JwtSvid, "spiffe://t/a", [format!("aud{i}")]);
            let slot = cache.slot(&key, i as u64);
            *slot.value.lock().await = None;
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
    }
}
