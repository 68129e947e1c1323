//! CNI specification versions: parsing, the versions this plugin speaks,
//! and negotiation with a delegate (IPAM) plugin.

use std::fmt;

/// A CNI specification version, `MAJOR.MINOR.PATCH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
}

impl Version {
    pub const V0_4_0: Version = Version::new(0, 4, 0);
    pub const V1_0_0: Version = Version::new(1, 0, 0);
    pub const V1_1_0: Version = Version::new(1, 1, 0);

    pub const fn new(major: u16, minor: u16, patch: u16) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Parses `"1.0.0"`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.split('.');
        let mut next = || match parts.next() {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok(),
            _ => None,
        };
        let version = Version::new(next()?, next()?, next()?);
        parts.next().is_none().then_some(version)
    }

    /// Whether this plugin speaks this version.
    pub fn is_supported(self) -> bool {
        SUPPORTED.contains(&self)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Every version this plugin speaks, oldest first.
pub const SUPPORTED: [Version; 3] = [Version::V0_4_0, Version::V1_0_0, Version::V1_1_0];

/// The newest version this plugin speaks (what `VERSION` reports).
pub const CURRENT: Version = Version::V1_1_0;

/// `SUPPORTED` as the text the spec uses, for messages.
pub fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(Version::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The version to hand a delegate that supports `theirs`, for a request in
/// `requested`: the newest version both this plugin and the delegate speak
/// that is not newer than `requested` (the runtime asked for that
/// version's semantics). `None` when there is none.
pub fn negotiate(requested: Version, theirs: &[Version]) -> Option<Version> {
    theirs
        .iter()
        .copied()
        .filter(|v| v.is_supported() && *v <= requested)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders_versions() {
        assert_eq!(Version::parse("1.0.0"), Some(Version::V1_0_0));
        assert_eq!(Version::parse("0.4.0"), Some(Version::V0_4_0));
        for bad in [
            "", "1", "0.4", "1.x.0", "1.0.0.0", "-1.0.0", "1..0", " 1.0.0",
        ] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
        assert!(Version::V0_4_0 < Version::V1_0_0);
        assert!(Version::V1_0_0 < Version::V1_1_0);
        assert!(Version::parse("0.10.0") > Version::parse("0.4.0"));
        assert_eq!(Version::V1_1_0.to_string(), "1.1.0");
    }

    #[test]
    fn negotiates_the_newest_common_version_up_to_the_request() {
        let host_local: Vec<Version> = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
            .iter()
            .filter_map(|v| Version::parse(v))
            .collect();
        assert_eq!(
            negotiate(Version::V1_1_0, &host_local),
            Some(Version::V1_0_0)
        );
        assert_eq!(
            negotiate(Version::V1_0_0, &host_local),
            Some(Version::V1_0_0)
        );
        assert_eq!(
            negotiate(Version::V0_4_0, &host_local),
            Some(Version::V0_4_0)
        );
        assert_eq!(
            negotiate(Version::V1_1_0, &[Version::V1_1_0, Version::V1_0_0]),
            Some(Version::V1_1_0)
        );
        let old = [Version::new(0, 3, 1)];
        assert_eq!(negotiate(Version::V1_1_0, &old), None);
        assert!(Version::parse("0.3.1").is_some_and(|v| !v.is_supported()));
    }
}
