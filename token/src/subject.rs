//! Workload subjects: a SPIFFE ID or a `urn:` name, and segment-aware prefix checks.
//!
//! One grammar serves every purpose, so that no purpose is a way around a chain
//! issuer's subject prefixes:
//! - **SPIFFE IDs** follow the SPIFFE ID spec: `spiffe://` trust domain
//!   (`[a-z0-9._-]`), then path segments of `[A-Za-z0-9._-]`; no empty, `.` or
//!   `..` segment, no trailing slash, no percent-encoding (`%` is not in the set).
//! - **URNs** are `urn:<nid>:<nss>`: the NID is 2-32 letters, digits and `-`,
//!   starting and ending with a letter or digit (RFC 8141); the NSS is one or
//!   more `:`-separated segments of `[A-Za-z0-9._~@+=-]`, none empty, `.` or `..`.
//!   `/`, `%`, `?` and `#` are refused, so a URN has exactly one spelling.
//!
//! Both have one spelling per name, so the valid form is the normalised form and
//! prefixes compare whole segments of it.
//!
//! Choria's own identities (`choria=alice`, a server's FQDN) are not SPIFFE IDs
//! or URNs. [`validate_for`] accepts them for the two Choria purposes only, as
//! one segment of `[A-Za-z0-9._=@-]`, and no prefix ever covers one, so a chain
//! constrained to prefixes can never sign one.

/// Longest subject accepted (the SPIFFE spec's URI limit).
pub const MAX_SUBJECT_LEN: usize = 2048;

/// Why a subject was refused. One variant per rule, as the `spiffe` crate does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    /// Empty subject.
    #[error("subject is empty")]
    Empty,
    /// Longer than [`MAX_SUBJECT_LEN`].
    #[error("subject is longer than {MAX_SUBJECT_LEN} bytes")]
    TooLong,
    /// Neither `spiffe://` nor `urn:`.
    #[error("subject must be a SPIFFE ID (spiffe://…) or a urn: name")]
    UnknownScheme,
    /// SPIFFE ID without a trust domain.
    #[error("SPIFFE ID has no trust domain")]
    MissingTrustDomain,
    /// Trust domain with a character outside `[a-z0-9.-_]`.
    #[error("SPIFFE ID trust domain has an invalid character (allowed: a-z 0-9 . - _)")]
    BadTrustDomainChar,
    /// Path with an empty segment, `.` or `..`, or a trailing slash.
    #[error("SPIFFE ID path has an empty, '.' or '..' segment, or a trailing slash")]
    BadPathSegment,
    /// Path with a character outside `[a-zA-Z0-9.-_]`.
    #[error("SPIFFE ID path has an invalid character (allowed: a-z A-Z 0-9 . - _)")]
    BadPathChar,
    /// A Choria identity (for a Choria purpose) outside its grammar.
    #[error("a Choria identity must be 1-255 characters of A-Z a-z 0-9 . _ = @ -")]
    BadChoriaIdentity,
    /// A `urn:` outside the grammar above.
    #[error("urn subject must be urn:<nid>:<segment>[:<segment>...], nid of 2-32 letters, digits and '-', segments of A-Z a-z 0-9 . _ ~ @ + = - (none empty, '.' or '..')")]
    BadUrn,
}

/// Checks that `s` is a valid SPIFFE ID or `urn:` name.
pub fn validate(s: &str) -> Result<(), SubjectError> {
    if s.is_empty() {
        return Err(SubjectError::Empty);
    }
    if s.len() > MAX_SUBJECT_LEN {
        return Err(SubjectError::TooLong);
    }
    if let Some(rest) = s.strip_prefix("spiffe://") {
        let (td, path) = rest
            .split_once('/')
            .map_or((rest, None), |(a, b)| (a, Some(b)));
        if td.is_empty() {
            return Err(SubjectError::MissingTrustDomain);
        }
        if !td
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
        {
            return Err(SubjectError::BadTrustDomainChar);
        }
        if let Some(path) = path {
            for seg in path.split('/') {
                if seg.is_empty() || seg == "." || seg == ".." {
                    return Err(SubjectError::BadPathSegment);
                }
                if !seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
                {
                    return Err(SubjectError::BadPathChar);
                }
            }
        }
        return Ok(());
    }
    if let Some(rest) = s.strip_prefix("urn:") {
        return if valid_urn(rest) {
            Ok(())
        } else {
            Err(SubjectError::BadUrn)
        };
    }
    Err(SubjectError::UnknownScheme)
}

/// [`validate`], or for `choria_client_id` and `choria_server` also a Choria
/// identity (see the module documentation). Mint and verify both use this.
pub fn validate_for(purpose: &str, s: &str) -> Result<(), SubjectError> {
    let choria = matches!(
        purpose,
        crate::claims::PURPOSE_CHORIA_CLIENT | crate::claims::PURPOSE_CHORIA_SERVER
    );
    if !choria || s.starts_with("spiffe://") || s.starts_with("urn:") {
        return validate(s);
    }
    let ok = (1..=255).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'=' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SubjectError::BadChoriaIdentity)
    }
}

/// `<nid>:<nss>` after `urn:`, as the module documentation states it.
fn valid_urn(rest: &str) -> bool {
    let Some((nid, nss)) = rest.split_once(':') else {
        return false;
    };
    let nid_ok = (2..=32).contains(&nid.len())
        && nid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !nid.starts_with('-')
        && !nid.ends_with('-');
    nid_ok
        && nss.split(':').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'.' | b'_' | b'~' | b'@' | b'+' | b'=' | b'-')
                })
        })
}

/// Whether `subject` equals `prefix` or lies below it, comparing whole segments
/// (`/` in a SPIFFE ID, `:` in a URN): `spiffe://td/ns/prod` does not cover
/// `spiffe://td/ns/production`. Both must be valid subjects (a prefix may end in
/// its separator); an invalid subject is under nothing, so a spelling the
/// grammar refuses (`…/web/../admin`, `…/web//admin`, `…/web%2f..`) can never
/// pass a prefix check.
pub fn is_under(subject: &str, prefix: &str) -> bool {
    let spiffe = prefix.starts_with("spiffe://");
    let sep = if spiffe { '/' } else { ':' };
    let prefix = prefix.strip_suffix(sep).unwrap_or(prefix);
    if validate(subject).is_err() || validate(prefix).is_err() {
        return false;
    }
    match subject.strip_prefix(prefix) {
        Some("") => true,
        Some(rest) => rest.starts_with(sep),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids() {
        assert_eq!(validate("spiffe://example.org/web"), Ok(()));
        assert_eq!(validate("spiffe://example.org"), Ok(()));
        assert_eq!(validate("spiffe://"), Err(SubjectError::MissingTrustDomain));
        assert_eq!(
            validate("spiffe://Example.org/x"),
            Err(SubjectError::BadTrustDomainChar)
        );
        assert_eq!(
            validate("spiffe://example.org:80/x"),
            Err(SubjectError::BadTrustDomainChar)
        );
        assert_eq!(
            validate("spiffe://example.org/a//b"),
            Err(SubjectError::BadPathSegment)
        );
        assert_eq!(
            validate("spiffe://example.org/a/"),
            Err(SubjectError::BadPathSegment)
        );
        assert_eq!(
            validate("spiffe://example.org/a/../b"),
            Err(SubjectError::BadPathSegment)
        );
        assert_eq!(
            validate("spiffe://example.org/a?b"),
            Err(SubjectError::BadPathChar)
        );
        assert_eq!(
            validate("https://example.org/a"),
            Err(SubjectError::UnknownScheme)
        );
        assert_eq!(validate(""), Err(SubjectError::Empty));
        assert_eq!(
            validate(&format!("spiffe://e/{}", "a".repeat(MAX_SUBJECT_LEN))),
            Err(SubjectError::TooLong)
        );
    }

    #[test]
    fn urns() {
        assert_eq!(validate("urn:lanyard:gateway-17"), Ok(()));
        assert_eq!(validate("urn:lanyard"), Err(SubjectError::BadUrn));
        assert_eq!(validate("urn::x"), Err(SubjectError::BadUrn));
        assert_eq!(validate("urn:a:b c"), Err(SubjectError::BadUrn));
    }

    #[test]
    fn prefixes() {
        assert!(is_under("spiffe://td/ns/prod", "spiffe://td/ns/prod"));
        assert!(is_under("spiffe://td/ns/prod/web", "spiffe://td/ns/prod"));
        assert!(is_under("spiffe://td/ns/prod/web", "spiffe://td/ns/"));
        assert!(!is_under(
            "spiffe://td/ns/production",
            "spiffe://td/ns/prod"
        ));
        assert!(is_under("urn:lanyard:gw:1", "urn:lanyard:gw"));
        assert!(is_under("urn:lanyard:gw:1", "urn:lanyard:gw:"));
        assert!(!is_under("urn:lanyard:gwx", "urn:lanyard:gw"));
    }

    /// The review's escapes from `spiffe://example.org/web`, each refused.
    #[test]
    fn no_spelling_escapes_a_prefix() {
        let p = "spiffe://example.org/web";
        for s in [
            "spiffe://example.org/web/../admin",
            "spiffe://example.org/web//admin",
            "spiffe://example.org/web/%2e%2e/admin",
            "spiffe://example.org/web:admin",
            "spiffe://example.org/web/./admin",
            "spiffe://example.org/web/",
            "spiffe://example.org/webadmin",
        ] {
            assert!(!is_under(s, p), "{s}");
        }
        assert!(is_under("spiffe://example.org/web/api", p));
        // A URN prefix is segment-aware on ':' and no '/' can hide one.
        assert!(!is_under(
            "urn:lanyard:tenant:0/admin",
            "urn:lanyard:tenant:0"
        ));
        assert!(!is_under("urn:lanyard:tenant:01", "urn:lanyard:tenant:0"));
    }

    #[test]
    fn choria_identities_only_for_choria_purposes_and_under_no_prefix() {
        for id in ["choria=rip.mcollective", "node1.example.net"] {
            assert_eq!(validate_for("choria_client_id", id), Ok(()), "{id}");
            assert_eq!(validate_for("choria_server", id), Ok(()), "{id}");
            assert!(validate_for("lanyard_workload", id).is_err(), "{id}");
            assert!(!is_under(id, "spiffe://example.org"), "{id}");
        }
        for bad in ["a/b", "a:b", "a b", "", "spiffe://example.org/web/../x"] {
            assert!(validate_for("choria_server", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urn_grammar() {
        for ok in [
            "urn:lanyard:gateway-17",
            "urn:lanyard:tenant:0:admin",
            "urn:x1:a.b_c~d@e+f=g",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in [
            "urn:lanyard:a::b",
            "urn:lanyard:a:",
            "urn:lanyard:..",
            "urn:lanyard:a/b",
            "urn:lanyard:a%3ab",
            "urn:lanyard:a?b",
            "urn:x:a",
            "urn:-x:a",
            "urn:lanyard:a b",
        ] {
            assert_eq!(validate(bad), Err(SubjectError::BadUrn), "{bad}");
        }
    }
}
