//! Longest-prefix match (being written).
