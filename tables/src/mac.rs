//! MAC addresses as podswitch writes and reads them: six bytes, spelled
//! `aa:bb:cc:dd:ee:ff` (lower-case hex; upper case is read too).

use std::fmt;
use std::str::FromStr;

/// A MAC address. The tables keep plain `[u8; 6]` (what frames carry); this
/// is how one is printed and parsed.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The six bytes.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> MacAddr {
        MacAddr(octets)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(mac: MacAddr) -> [u8; 6] {
        mac.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not six colon-separated hex bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadMac(pub String);

impl fmt::Display for BadMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a MAC address (six hex bytes separated by colons, e.g. 02:00:00:00:00:01)",
            self.0
        )
    }
}

impl std::error::Error for BadMac {}

impl FromStr for MacAddr {
    type Err = BadMac;

    fn from_str(s: &str) -> Result<MacAddr, BadMac> {
        let bad = || BadMac(s.to_string());
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut mac {
            let part = parts.next().ok_or_else(bad)?;
            if part.is_empty() || part.len() > 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *b = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        match parts.next() {
            None => Ok(MacAddr(mac)),
            Some(_) => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_and_parses_the_same_address() {
        let mac = MacAddr([0x02, 0x56, 0xc6, 0x12, 0x00, 0xff]);
        assert_eq!(mac.to_string(), "02:56:c6:12:00:ff");
        assert_eq!("02:56:C6:12:0:ff".parse::<MacAddr>(), Ok(mac));
    }

    #[test]
    fn refuses_what_is_not_six_bytes() {
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "02:00:00:00:00:100",
            "02:00:00:00::01",
            "zz:00:00:00:00:01",
            "+2:00:00:00:00:01",
        ] {
            let err = bad.parse::<MacAddr>().unwrap_err();
            assert!(err.to_string().contains("is not a MAC address"), "{bad}");
        }
    }
}
