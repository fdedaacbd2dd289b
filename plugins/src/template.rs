//! Entry templates: one entry for a whole cluster, its subject filled from the
//! caller's selectors, e.g. `spiffe://{trust_domain}/ns/{k8s:ns}/sa/{k8s:sa}`.
//!
//! A placeholder `{type:key}` takes the value of the caller's one selector
//! `type:key:<value>`. A caller with none, or with several different values
//! (two `k8s:pod-label:…` of one key cannot happen, but a template must not
//! guess), does not get the entry: a template never widens what anyone gets.
//! The rendered subject must still be a valid identity.

use crate::Selector;

/// Longest template accepted.
pub const MAX_TEMPLATE_LEN: usize = 2048;

/// Why a template is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// A `{` without its `}`, or a `}` without its `{`.
    #[error("unbalanced braces in {0:?}")]
    Unbalanced(String),
    /// A placeholder that is not `{trust_domain}` or `{type:key}`.
    #[error("placeholder {{{0}}} must be {{trust_domain}} or {{type:key}} (e.g. {{k8s:ns}})")]
    Placeholder(String),
    /// Too long.
    #[error("template longer than {MAX_TEMPLATE_LEN} bytes")]
    TooLong,
    /// Two placeholders in one path segment: which value ends where would be
    /// ambiguous (and costly for the issuer to check).
    #[error("at most one placeholder per path segment in {0:?}")]
    TwoInOneSegment(String),
    /// With every placeholder filled, it is not a valid identity.
    #[error("not a valid subject once filled: {0}")]
    Subject(String),
}

/// Whether `subject` has placeholders.
pub fn is_template(subject: &str) -> bool {
    subject.contains('{') || subject.contains('}')
}

enum Part<'a> {
    Text(&'a str),
    TrustDomain,
    Selector(&'a str),
}

fn parts(t: &str) -> Result<Vec<Part<'_>>, TemplateError> {
    if t.len() > MAX_TEMPLATE_LEN {
        return Err(TemplateError::TooLong);
    }

    let mut out = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let text = &rest[..open];
        if text.contains('}') {
            return Err(TemplateError::Unbalanced(t.to_owned()));
        }
        out.push(Part::Text(text));
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| TemplateError::Unbalanced(t.to_owned()))?;
        let name = &after[..close];
        if name.contains('{') {
            return Err(TemplateError::Unbalanced(t.to_owned()));
        }
        out.push(if name == "trust_domain" {
            Part::TrustDomain
        } else {
            // A key with '/' would let one placeholder span path segments,
            // defeating the one-per-segment rule below that keeps `matches`
            // linear (the fuzzer found a 4 KB template and subject that took
            // it minutes).
            let valid = name.split_once(':').is_some_and(|(ty, key)| {
                !ty.is_empty()
                    && !key.is_empty()
                    && !key.contains([':', '/'])
                    && ty
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            });
            if !valid {
                return Err(TemplateError::Placeholder(name.to_owned()));
            }
            Part::Selector(name)
        });
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(TemplateError::Unbalanced(t.to_owned()));
    }
    out.push(Part::Text(rest));
    // Checked once the braces are known to balance.
    if t.split('/').any(|seg| seg.matches('{').count() > 1) {
        return Err(TemplateError::TwoInOneSegment(t.to_owned()));
    }
    Ok(out)
}

/// The `type:key` of every selector placeholder in `template` (none when it is
/// not a well-formed template).
pub fn placeholders(template: &str) -> Vec<&str> {
    parts(template)
        .map(|parts| {
            parts
                .into_iter()
                .filter_map(|p| match p {
                    Part::Selector(name) => Some(name),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Checks a template: well formed, a SPIFFE ID's trust domain written out (a
/// caller's selector must never choose it), and a valid subject when every
/// placeholder holds a plain value.
pub fn validate(template: &str, trust_domain: &str) -> Result<(), TemplateError> {
    if let Some(rest) = template.strip_prefix("spiffe://") {
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.contains('{') && authority != "{trust_domain}" {
            return Err(TemplateError::Subject(
                "the trust domain of a template cannot come from a selector".into(),
            ));
        }
    }
    let filled: String = parts(template)?
        .iter()
        .map(|p| match p {
            Part::Text(t) => *t,
            Part::TrustDomain => trust_domain,
            Part::Selector(_) => "x",
        })
        .collect();
    lanyard_token::subject::validate(&filled).map_err(|e| TemplateError::Subject(e.to_string()))
}

/// Fills `template` from `selectors`; `Ok(None)` when the caller lacks a
/// placeholder's selector, has it with several values, or the result is not a
/// valid subject (the entry then does not apply to this caller).
pub fn render(
    template: &str,
    trust_domain: &str,
    selectors: &[Selector],
) -> Result<Option<String>, TemplateError> {
    let mut out = String::new();
    for p in parts(template)? {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::TrustDomain => out.push_str(trust_domain),
            Part::Selector(name) => {
                let prefix = format!("{name}:");
                let mut values = selectors
                    .iter()
                    .filter_map(|s| s.as_str().strip_prefix(&prefix));
                let (Some(v), None) = (values.next(), values.next()) else {
                    return Ok(None);
                };
                // A value fills part of one segment and never reaches into the
                // structure: no '/' (SPIFFE path) and no ':' (URN segments), so
                // `urn:lanyard:tenant:{unix:uid}` cannot become another
                // node's `urn:lanyard:tenant:0:admin`.
                if v.is_empty() || v.contains(['/', ':']) {
                    return Ok(None);
                }
                out.push_str(v);
            }
        }
    }
    Ok(lanyard_token::subject::validate(&out)
        .is_ok()
        .then_some(out))
}

/// Whether `subject` is something `template` can render to (the issuer's check
/// of what an agent asks it to sign; the agent vouches for the selectors).
pub fn matches(template: &str, trust_domain: &str, subject: &str) -> bool {
    let Ok(parts) = parts(template) else {
        return false;
    };
    fn go(parts: &[Part<'_>], td: &str, s: &str) -> bool {
        match parts.split_first() {
            None => s.is_empty(),
            Some((Part::Text(t), rest)) => s.strip_prefix(t).is_some_and(|s| go(rest, td, s)),
            Some((Part::TrustDomain, rest)) => s.strip_prefix(td).is_some_and(|s| go(rest, td, s)),
            // A value is one or more characters without '/' or ':', as
            // `render` fills it.
            Some((Part::Selector(_), rest)) => {
                let end = s.find(['/', ':']).unwrap_or(s.len());
                (1..=end).any(|i| s.is_char_boundary(i) && go(rest, td, &s[i..]))
            }
        }
    }
    lanyard_token::subject::validate(subject).is_ok() && go(&parts, trust_domain, subject)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sel(v: &[&str]) -> Vec<Selector> {
        v.iter().map(|s| Selector::parse(s).unwrap()).collect()
    }

    const T: &str = "spiffe://{trust_domain}/ns/{k8s:ns}/sa/{k8s:sa}";

    /// Finding 4: a URN placeholder value with ':' reached into another
    /// node's name; neither the agent renders it nor the issuer matches it.
    #[test]
    fn attacker_a_value_with_a_colon_is_refused() {
        let t = "urn:lanyard:tenant:{unix:uid}";
        assert_eq!(
            render(t, "example.org", &sel(&["unix:uid:0:admin"])).unwrap(),
            None
        );
        assert!(!matches(t, "example.org", "urn:lanyard:tenant:0:admin"));
        assert!(matches(t, "example.org", "urn:lanyard:tenant:0"));
        assert_eq!(
            render(t, "example.org", &sel(&["unix:uid:0"])).unwrap(),
            Some("urn:lanyard:tenant:0".into())
        );
    }

    #[test]
    fn a_placeholder_cannot_span_segments() {
        // The fuzzer's timeout input (fuzz/regressions/selector_template/): keys
        // with '/' hid adjacent placeholders from the one-per-segment rule.
        let t = "spiffe://{trus:9//a}{k:$/op2/}{ks:9//a}{k:$/op2/}{k4s:sa}";
        assert!(matches!(parts(t), Err(TemplateError::Placeholder(_))));
        assert!(!matches(t, "", "spiffe://exa.org/aaaa/op2/bbbb/op2/cc"));
        assert!(matches!(
            validate("spiffe://example.org/{k8s:a/b}", "example.org"),
            Err(TemplateError::Placeholder(_))
        ));
    }

    #[test]
    fn fills_from_the_callers_selectors() {
        let s = sel(&["k8s:ns:shop", "k8s:sa:cart", "unix:uid:0"]);
        assert_eq!(
            render(T, "example.org", &s).unwrap().as_deref(),
            Some("spiffe://example.org/ns/shop/sa/cart")
        );
        assert!(validate(T, "example.org").is_ok());
        assert!(!is_template("spiffe://example.org/x"));
    }

    #[test]
    fn the_issuer_recognises_what_a_template_renders() {
        assert!(matches(
            T,
            "example.org",
            "spiffe://example.org/ns/shop/sa/cart"
        ));
        assert!(!matches(
            T,
            "example.org",
            "spiffe://example.org/ns/shop/sa/cart/x"
        ));
        assert!(!matches(
            T,
            "example.org",
            "spiffe://example.org/ns/a/b/sa/cart"
        ));
        assert!(!matches(
            T,
            "example.org",
            "spiffe://other.org/ns/shop/sa/cart"
        ));
        assert!(!matches(
            T,
            "example.org",
            "spiffe://example.org/ns//sa/cart"
        ));
        assert!(validate("spiffe://{k8s:ns}/x", "example.org").is_err());
    }

    #[test]
    fn never_guesses() {
        // Missing, several values, a value with a slash, an invalid result.
        assert_eq!(
            render(T, "example.org", &sel(&["k8s:ns:shop"])).unwrap(),
            None
        );
        assert_eq!(
            render(
                T,
                "example.org",
                &sel(&["k8s:ns:a", "k8s:ns:b", "k8s:sa:c"])
            )
            .unwrap(),
            None
        );
        assert_eq!(
            render(T, "example.org", &sel(&["k8s:ns:a/../b", "k8s:sa:c"])).unwrap(),
            None
        );
        assert_eq!(
            render(T, "example.org", &sel(&["k8s:ns:A B", "k8s:sa:c"])).unwrap(),
            None
        );
    }

    #[test]
    fn malformed_templates_are_refused() {
        for (t, want) in [
            ("spiffe://x/{k8s:ns", "Unbalanced"),
            ("spiffe://x/k8s:ns}", "Unbalanced"),
            ("spiffe://x/{{k8s:ns}}", "Unbalanced"),
            ("spiffe://x/{ns}", "Placeholder"),
            ("spiffe://x/{K8S:ns}", "Placeholder"),
            ("spiffe://x/{k8s:pod-label:app}", "Placeholder"),
            ("http://x/{k8s:ns}", "Subject"),
            ("spiffe://x/{k8s:ns}-{k8s:sa}", "TwoInOneSegment"),
        ] {
            let e = validate(t, "example.org").unwrap_err();
            assert!(format!("{e:?}").starts_with(want), "{t}: {e:?}");
        }
        assert_eq!(
            validate(&"a".repeat(3000), "x"),
            Err(TemplateError::TooLong)
        );
    }
}
