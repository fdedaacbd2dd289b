//! Placeholder: this crate is filled by a later issue (see DESIGN.md, Components).
