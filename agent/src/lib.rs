//! The lanyard agent (work in progress; see the README's Status table).
pub mod authority;
pub mod config;
pub mod fsutil;
pub mod peer;
pub mod svid;
