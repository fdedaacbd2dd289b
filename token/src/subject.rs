//! Workload subjects: a SPIFFE ID or a `urn:` name, and segment-aware prefix checks.

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
    /// A `urn:` without namespace and specific string, or with spaces/control chars.
    #[error("urn subject must look like urn:<nid>:<nss> with printable characters")]
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
        let ok = rest
            .split_once(':')
            .is_some_and(|(nid, nss)| !nid.is_empty() && !nss.is_empty())
            && rest.bytes().all(|b| b.is_ascii_graphic());
        return if ok {
            Ok(())
        } else {
            Err(SubjectError::BadUrn)
        };
    }
    Err(SubjectError::UnknownScheme)
}

/// Whether `subject` equals `prefix` or lies below it. Segment-aware, so
/// `spiffe://td/ns/prod` does not cover `spiffe://td/ns/production`.
pub fn is_under(subject: &str, prefix: &str) -> bool {
    match subject.strip_prefix(prefix) {
        Some("") => true,
        Some(rest) => prefix.ends_with(['/', ':']) || rest.starts_with(['/', ':']),
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
        assert!(!is_under("urn:lanyard:gwx", "urn:lanyard:gw"));
    }
}
