//! Selectors: `type:value`, where value may itself contain colons
//! (`unix:uid:1000`, `unix:path:/usr/bin/web`, `docker:label:app:web`).

/// Why a selector string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// No `type:` prefix, or an empty value.
    #[error("selector {0:?} must look like type:value (e.g. unix:uid:1000)")]
    Syntax(String),
    /// The type is not lowercase `[a-z0-9_]`.
    #[error("selector type in {0:?} must be lowercase letters, digits or _")]
    BadType(String),
    /// Control characters have no place in a selector.
    #[error("selector {0:?} contains a control character")]
    Control(String),
    /// No attestor derives selectors of this type, so an entry naming it could
    /// never match.
    #[error("selector {0:?}: unknown type; known types are {1}")]
    UnknownType(String, String),
    /// The attestor of this type derives no selector with this key.
    #[error("selector {0:?}: unknown key; {1} selectors are {2}")]
    UnknownKey(String, String, String),
    /// `type:key` without a value after it.
    #[error("selector {0:?} has no value after type:key (e.g. unix:uid:1000)")]
    NoValue(String),
}

/// Every `type:key` the workload attestors derive: what an entry may name.
pub const WORKLOAD_SELECTORS: &[(&str, &[&str])] = &[
    (
        "unix",
        &[
            "uid",
            "gid",
            "user",
            "group",
            "supplementary_gid",
            "path",
            "sha256",
        ],
    ),
    ("container", &["id", "pod-uid", "runtime"]),
    ("systemd", &["unit"]),
    ("docker", &["label", "image_id", "image"]),
    (
        "k8s",
        &[
            "ns",
            "sa",
            "pod-name",
            "pod-uid",
            "pod-label",
            "pod-owner",
            "node-name",
            "container-name",
            "container-image",
        ],
    ),
];

/// One fact about a workload, e.g. `unix:uid:1000`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector(String);

impl Selector {
    /// Parses and checks `type:value`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let (ty, value) = s
            .split_once(':')
            .ok_or_else(|| SelectorError::Syntax(s.to_owned()))?;
        if ty.is_empty() || value.is_empty() {
            return Err(SelectorError::Syntax(s.to_owned()));
        }
        if !ty
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(SelectorError::BadType(s.to_owned()));
        }
        if s.chars().any(char::is_control) {
            return Err(SelectorError::Control(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    /// Parses a selector an entry names: [`Selector::parse`], and a
    /// `type:key:value` whose type and key some workload attestor derives
    /// ([`WORKLOAD_SELECTORS`]). `unixx:uid:0` or `unix:uid` would never match
    /// anything; an operator is told so when the entry is written.
    pub fn parse_workload(s: &str) -> Result<Self, SelectorError> {
        let sel = Self::parse(s)?;
        let mut parts = s.splitn(3, ':');
        let (ty, key, value) = (parts.next().unwrap_or(""), parts.next(), parts.next());
        let Some((_, keys)) = WORKLOAD_SELECTORS.iter().find(|(t, _)| *t == ty) else {
            let types: Vec<&str> = WORKLOAD_SELECTORS.iter().map(|(t, _)| *t).collect();
            return Err(SelectorError::UnknownType(s.to_owned(), types.join(", ")));
        };
        let Some(key) = key.filter(|k| keys.contains(k)) else {
            let known: Vec<String> = keys.iter().map(|k| format!("{ty}:{k}")).collect();
            return Err(SelectorError::UnknownKey(
                s.to_owned(),
                ty.to_owned(),
                known.join(", "),
            ));
        };
        if value.is_none_or(str::is_empty) {
            return Err(SelectorError::NoValue(format!("{ty}:{key}")));
        }
        Ok(sel)
    }

    /// Builds `ty:key:value` from parts the attestor trusts.
    pub fn new(ty: &str, key: &str, value: impl std::fmt::Display) -> Self {
        Self(format!("{ty}:{key}:{value}"))
    }

    /// The selector type (`unix`).
    pub fn kind(&self) -> &str {
        self.0.split_once(':').map_or("", |(t, _)| t)
    }

    /// The whole selector text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The `type:key` pairs (`unix:sha256`) that some entry matches on or fills a
/// template from. An attestor may leave out a selector that costs real work
/// when nothing names it: it could only ever narrow what the caller matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    everything: bool,
    keys: std::collections::BTreeSet<String>,
}

impl Wanted {
    /// Every selector (`lanyard attest`, which shows an operator all of them).
    pub fn everything() -> Self {
        Self {
            everything: true,
            keys: Default::default(),
        }
    }

    /// Adds the `type:key` of `selector` (all of it when there is no key).
    pub fn add_selector(&mut self, selector: &Selector) {
        let s = selector.as_str();
        let key = match s.match_indices(':').nth(1) {
            Some((i, _)) => &s[..i],
            None => s,
        };
        self.keys.insert(key.to_owned());
    }

    /// Adds the placeholders of an entry subject (a template or a plain subject).
    pub fn add_subject(&mut self, subject: &str) {
        for name in crate::template::placeholders(subject) {
            self.keys.insert(name.to_owned());
        }
    }

    /// Whether `ty:key` selectors are wanted.
    pub fn wants(&self, ty: &str, key: &str) -> bool {
        self.everything || self.keys.contains(&format!("{ty}:{key}"))
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_names_type_and_key() {
        let mut w = Wanted::default();
        assert!(!w.wants("unix", "sha256"));
        w.add_selector(&Selector::parse("unix:sha256:abc").unwrap());
        w.add_selector(&Selector::parse("docker:label:app:web").unwrap());
        w.add_subject("spiffe://{trust_domain}/ns/{k8s:ns}");
        assert!(w.wants("unix", "sha256"));
        assert!(w.wants("docker", "label"));
        assert!(w.wants("k8s", "ns"));
        assert!(!w.wants("unix", "sha"));
        assert!(!w.wants("unix", "uid"));
        assert!(!w.wants("trust_domain", ""));
        assert!(Wanted::everything().wants("unix", "sha256"));
    }

    #[test]
    fn parse() {
        assert_eq!(Selector::parse("unix:uid:1000").unwrap().kind(), "unix");
        assert_eq!(
            Selector::parse("unix:path:/usr/bin/a:b").unwrap().as_str(),
            "unix:path:/usr/bin/a:b"
        );
        assert!(matches!(
            Selector::parse("uid"),
            Err(SelectorError::Syntax(_))
        ));
        assert!(matches!(
            Selector::parse("unix:"),
            Err(SelectorError::Syntax(_))
        ));
        assert!(matches!(
            Selector::parse(":x"),
            Err(SelectorError::Syntax(_))
        ));
        assert!(matches!(
            Selector::parse("Unix:uid:1"),
            Err(SelectorError::BadType(_))
        ));
        assert!(matches!(
            Selector::parse("unix:uid:1\n"),
            Err(SelectorError::Control(_))
        ));
    }

    #[test]
    fn entries_may_name_only_selectors_some_attestor_derives() {
        for ok in [
            "unix:uid:0",
            "unix:path:/usr/bin/web",
            "docker:label:app:web",
            "k8s:pod-owner:ReplicaSet:web-1",
            "container:pod-uid:8b9dd266-60dd-4433-8e5e-3bdcc7697bee",
            "systemd:unit:nginx.service",
        ] {
            Selector::parse_workload(ok).unwrap();
        }
        let err = |s: &str| Selector::parse_workload(s).unwrap_err();
        assert!(matches!(err("unixx:uid:0"), SelectorError::UnknownType(..)));
        assert!(err("unixx:uid:0").to_string().contains("unix, container"));
        assert!(matches!(err("unix:pid:4"), SelectorError::UnknownKey(..)));
        assert!(err("unix:pid:4").to_string().contains("unix:uid"));
        assert!(matches!(
            err("unix:uid"),
            SelectorError::UnknownKey(..) | SelectorError::NoValue(_)
        ));
        assert!(matches!(err("unix:uid:"), SelectorError::NoValue(_)));
        assert!(matches!(err("k8s:ns"), SelectorError::NoValue(_)));
        // What `parse` refuses, this refuses too.
        assert!(matches!(err("unix"), SelectorError::Syntax(_)));
    }
}
